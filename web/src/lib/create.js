/** The create form's rules: cost, and why the submit button is disabled (an i18n key). */

export const SIZE_PRESETS = [
  { key: 'square', width: 512, height: 512 },
  { key: 'portrait', width: 512, height: 768 },
  { key: 'landscape', width: 768, height: 512 },
  { key: 'large', width: 1024, height: 1024 },
]

export const PROMPT_MAX = 500
export const NEGATIVE_MAX = 200

/** The original's descriptive labels for the cfg ("创意程度") and steps sliders. */
export function cfgLabelKey(cfg) {
  if (cfg <= 5) return 'create.cfgLabels.conservative'
  if (cfg <= 10) return 'create.cfgLabels.balanced'
  if (cfg <= 15) return 'create.cfgLabels.bold'
  return 'create.cfgLabels.wild'
}

export function stepsLabelKey(steps) {
  if (steps <= 20) return 'create.stepsLabels.fast'
  if (steps <= 35) return 'create.stepsLabels.standard'
  return 'create.stepsLabels.high'
}

export function jobCost(pricePerImage, batchSize) {
  const price = Number(pricePerImage) || 0
  const n = Math.max(1, Math.min(4, Math.trunc(Number(batchSize) || 1)))
  return price * n
}

export function validSize(width, height, { min = 64, max = 2048, multipleOf = 8 } = {}) {
  return [width, height].every((v) => Number.isInteger(v) && v >= min && v <= max && v % multipleOf === 0)
}

/**
 * The first reason the form cannot be submitted, or null.
 * form: { workflow, prompt, negativePrompt, model, width, height, sourceImage }
 * ctx: { signedIn, balance, pricePerImage, batchSize, liveWorkers, submitting, catalogLoaded, needsSource, needsPrompt }
 */
export function blockReason(form, ctx) {
  if (!ctx.signedIn) return 'create.reasons.signIn'
  if (ctx.submitting) return 'create.reasons.submitting'
  if (!ctx.catalogLoaded) return 'create.reasons.loading'
  if (ctx.needsPrompt !== false && !String(form.prompt || '').trim()) return 'create.reasons.prompt'
  if (String(form.prompt || '').length > PROMPT_MAX) return 'create.reasons.promptLong'
  if (String(form.negativePrompt || '').length > NEGATIVE_MAX) return 'create.reasons.negativeLong'
  if (ctx.needsSource && !form.sourceImage) return 'create.reasons.source'
  if (!form.model && ctx.needsModel !== false) return 'create.reasons.model'
  if (ctx.needsSize !== false && !validSize(form.width, form.height)) return 'create.reasons.size'
  if (ctx.balance === null || ctx.balance === undefined) return 'create.reasons.loading'
  if (jobCost(ctx.pricePerImage, ctx.batchSize) > ctx.balance) return 'create.reasons.credits'
  return null
}

/** Request body for POST /api/generate from the form (only what the workflow knows). */
export function generateBody(form, workflow) {
  const names = new Set((workflow?.parameters || []).map((p) => p.name))
  const all = {
    prompt: form.prompt.trim(),
    negativePrompt: form.negativePrompt,
    model: form.model,
    width: form.width,
    height: form.height,
    batchSize: form.batchSize,
    steps: form.steps,
    cfgScale: form.cfgScale,
    seed: form.seed,
    sampler: form.sampler,
    scheduler: form.scheduler,
    sourceImage: form.sourceImage?.ref ?? form.sourceImage,
    denoise: form.denoise,
  }
  const body = { workflow: workflow?.name || 'text2img' }
  for (const [key, value] of Object.entries(all)) {
    if (names.size && !names.has(key)) continue
    if (value === undefined || value === null || value === '') continue
    body[key] = value
  }
  return body
}

export const PASSWORD_RULES = [
  { key: 'length', test: (p) => p.length >= 8 && p.length <= 128 },
  { key: 'letter', test: (p) => /[A-Za-z]/.test(p) },
  { key: 'digit', test: (p) => /\d/.test(p) },
]

export const USERNAME_RULE = /^[A-Za-z0-9_]{3,20}$/
