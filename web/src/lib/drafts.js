/**
 * The create form's memory: each workflow keeps its own settings, the prompt and seed are
 * shared, and all of it survives a reload (per user, in localStorage).
 */
import { defaultOption, optionsFor } from './catalog'

export const SHARED_FIELDS = ['prompt', 'negativePrompt', 'seed', 'seedLocked', 'batchSize']
const KEY = (userId) => `aigc.create.${userId}`

/** A stored or reused value if the parameter accepts it, else the parameter's default. */
export function acceptedValue(param, candidate, catalog) {
  if (param.from) {
    const options = optionsFor(param, catalog)
    if (typeof candidate === 'string' && (options.some((o) => o.name === candidate) || (param.optional && candidate === ''))) return candidate
    return defaultOption(param, options)
  }
  if (param.choices) return param.choices.includes(candidate) ? candidate : param.default ?? param.choices[0]
  if (param.type === 'int' || param.type === 'float') {
    const n = Number(candidate)
    const ok = candidate !== null && candidate !== '' && Number.isFinite(n) && (param.type === 'float' || Number.isInteger(n))
      && (param.min === undefined || n >= param.min) && (param.max === undefined || n <= param.max)
      && (!param.multipleOf || n % param.multipleOf === 0)
    return ok ? n : param.default ?? param.min ?? 0
  }
  if (param.type === 'image') return candidate ?? null
  if (typeof candidate === 'string') return candidate
  return param.default ?? ''
}

/** Values for every parameter of a workflow from `stored` (missing or invalid → default). */
export function valuesFor(workflow, stored, catalog) {
  const out = {}
  for (const param of workflow?.parameters || []) {
    if (param.type === 'image') continue
    out[param.name] = acceptedValue(param, stored?.[param.name], catalog)
  }
  return out
}

export function loadDraft(userId) {
  if (!userId) return null
  try {
    const raw = window.localStorage.getItem(KEY(userId))
    return raw ? JSON.parse(raw) : null
  } catch {
    return null
  }
}

export function saveDraft(userId, draft) {
  if (!userId) return
  try {
    window.localStorage.setItem(KEY(userId), JSON.stringify(draft))
  } catch { /* storage full or unavailable: the form still works */ }
}
