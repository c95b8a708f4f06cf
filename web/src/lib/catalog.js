/** Names people read for what the catalog lists by file name or code. */

const EXTENSIONS = /\.(safetensors|ckpt|pt|pth|bin|gguf|onnx)$/i

/** A model's display name: the registry's (localised) name when the catalog has one, else its file name made readable. */
export function modelLabel(model, lang = 'zh') {
  if (!model) return ''
  if (typeof model === 'string') return prettyFileName(model)
  const names = model.displayNames || model.labels
  return names?.[lang] || names?.zh || names?.en || model.displayName || prettyFileName(model.name)
}

export function prettyFileName(name) {
  const base = String(name || '').split('/').pop().replace(EXTENSIONS, '')
  return base
    .split(/[_\s-]+/)
    .filter(Boolean)
    .map((word) => (/^(sd|sdxl|xl|vae|lora|t5|clip)\d*/i.test(word) ? word.toUpperCase() : word.charAt(0).toUpperCase() + word.slice(1)))
    .join(' ')
}

/** A workflow's label from the catalog in the UI language, else the code. */
export function workflowLabel(catalog, name, lang = 'zh') {
  const wf = (catalog?.workflows || []).find((w) => w.name === name)
  return wf?.labels?.[lang] || wf?.labels?.zh || name || ''
}

/** The options of a parameter that draws from the catalog (`from`: a model kind, samplers or schedulers). */
export function optionsFor(param, catalog) {
  if (!param?.from || !catalog) return []
  if (param.from === 'samplers' || param.from === 'schedulers') return (catalog[param.from] || []).map((name) => ({ name }))
  return (catalog.models || []).filter((m) => m.kind === param.from)
}

/** The catalog's default for a `from` parameter: the first option matching `match`, else the first. */
export function defaultOption(param, options) {
  if (param?.default !== undefined && options.some((o) => o.name === param.default)) return param.default
  const pattern = param?.match ? new RegExp(param.match) : null
  return (pattern && options.find((o) => pattern.test(o.name)))?.name || (param?.optional ? '' : options[0]?.name || '')
}
