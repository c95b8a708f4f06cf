/** The create form's rules: cost, sizes, presets, recommended settings, the request body, and why the submit button is disabled. */
import { acceptedValue } from './drafts'

/** Aspect ratios offered above the size fields, in the order the original labelled them. */
export const ASPECTS = [
  { key: '1:1', w: 1, h: 1 },
  { key: '2:3', w: 2, h: 3 },
  { key: '3:2', w: 3, h: 2 },
  { key: '9:16', w: 9, h: 16 },
  { key: '16:9', w: 16, h: 9 },
]

const roundTo = (value, step) => Math.max(step, Math.round(value / step) * step)

/**
 * Width and height for an aspect ratio on a model whose native square side is `base`
 * (the workflow's default width: 512 for SD 1.5, 1024 for SDXL and Flux). Small models
 * keep their native short side (512×768 like the original); large ones keep their native
 * area (SDXL's 832×1216 buckets). Never beyond `max` per side or `maxPixels` in all.
 */
export function sizeForAspect(aspect, { base = 512, step = 64, max = 2048, maxPixels = Infinity } = {}) {
  const ratio = aspect.w / aspect.h
  let width
  let height
  if (base <= 768) {
    width = ratio >= 1 ? base * ratio : base
    height = ratio >= 1 ? base : base / ratio
  } else {
    width = base * Math.sqrt(ratio)
    height = base / Math.sqrt(ratio)
  }
  width = Math.min(max, roundTo(width, step))
  height = Math.min(max, roundTo(height, step))
  while (width * height > maxPixels && width > step && height > step) {
    width -= ratio >= 1 ? step : 0
    height -= ratio >= 1 ? 0 : step
  }
  return { width, height }
}

/** The aspect key whose size matches, else 'custom'. */
export function aspectOf(width, height, options) {
  const match = ASPECTS.find((a) => {
    const size = sizeForAspect(a, options)
    return size.width === width && size.height === height
  })
  return match ? match.key : 'custom'
}

/**
 * The settings a model's registry entry recommends (GET /api/models → models[].recommended:
 * steps, cfgScale, sampler, width, height…) that this workflow declares and accepts, as form
 * values. Style presets ({ key, labels: { zh, en }, text }) come from the catalog too.
 */
export function recommendedFor(model, workflow, catalog) {
  const out = {}
  for (const [name, value] of Object.entries(model?.recommended || {})) {
    const param = workflow?.parameters?.find((p) => p.name === name)
    if (!param || param.type === 'image') continue
    if (acceptedValue(param, value, catalog) === value) out[name] = value
  }
  return out
}

/** Add a preset's words to a text, once. */
export function withPreset(text, preset) {
  const base = String(text || '').trim()
  if (!preset?.text || base.includes(preset.text)) return base
  return base ? `${base}, ${preset.text}` : preset.text
}

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

/**
 * Request body for POST /api/generate: every parameter the workflow declares, read from the
 * form by its name (so a new template's parameters need no code here). Empty values are left
 * out so the server applies its defaults; an image is sent by its reference.
 */
export function generateBody(form, workflow) {
  const body = { workflow: workflow?.name || 'text2img' }
  for (const param of workflow?.parameters || []) {
    let value = form[param.name]
    if (value && typeof value === 'object' && 'ref' in value) value = value.ref
    else if (param.name === 'prompt') value = String(value || '').trim()
    if (value === undefined || value === null || value === '') continue
    body[param.name] = value
  }
  return body
}

/**
 * The form values a finished job (or a saved work) was made with, for "reuse".
 * mode: 'all' (every setting, seed included), 'prompt' (prompts only), 'seed' (only the seed),
 * 'vary' (every setting but a new random seed).
 */
export function reuseValues(params, mode = 'all') {
  const p = params || {}
  if (mode === 'prompt') {
    const out = {}
    if (p.prompt !== undefined) out.prompt = p.prompt
    if (p.negativePrompt !== undefined) out.negativePrompt = p.negativePrompt
    return out
  }
  if (mode === 'seed') return typeof p.seed === 'number' && p.seed >= 0 ? { seed: p.seed, seedLocked: true } : {}
  const out = { ...p }
  if (mode === 'vary') {
    out.seed = -1
    out.seedLocked = false
  } else if (typeof p.seed === 'number' && p.seed >= 0) {
    out.seedLocked = true
  }
  return out
}

export const PASSWORD_RULES = [
  { key: 'length', test: (p) => p.length >= 8 && p.length <= 128 },
  { key: 'letter', test: (p) => /[A-Za-z]/.test(p) },
  { key: 'digit', test: (p) => /\d/.test(p) },
]

export const USERNAME_RULE = /^[A-Za-z0-9_]{3,20}$/
/** Display names: any script, 1–30 characters, no control characters. */
export const DISPLAY_NAME_RULE = /^[^\p{C}]{1,30}$/u
