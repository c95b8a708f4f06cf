/** Dates and numbers in the user's locale. The API sends ISO 8601 UTC strings. */

export function parseDate(value) {
  if (value === null || value === undefined || value === '') return null
  const date = value instanceof Date ? value : new Date(value)
  return Number.isNaN(date.getTime()) ? null : date
}

const cache = new Map()
function formatter(locale, options) {
  const key = `${locale}|${JSON.stringify(options)}`
  if (!cache.has(key)) cache.set(key, new Intl.DateTimeFormat(locale, options))
  return cache.get(key)
}

export const DATE_TIME = { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' }
export const DATE_ONLY = { year: 'numeric', month: '2-digit', day: '2-digit' }
/** Month and day in the locale's own words ("Dec 6", "12月6日"): a date where ten characters do not fit. */
export const MONTH_DAY = { month: 'short', day: 'numeric' }

/** "—" for a missing or unparsable value; never "Invalid Date". */
export function formatDate(value, locale = 'zh-CN', options = DATE_TIME, timeZone) {
  const date = parseDate(value)
  if (!date) return '—'
  return formatter(locale, timeZone ? { ...options, timeZone } : options).format(date)
}

export function formatRelative(value, locale = 'zh-CN', now = Date.now()) {
  const date = parseDate(value)
  if (!date) return '—'
  const seconds = Math.round((date.getTime() - now) / 1000)
  const abs = Math.abs(seconds)
  const rtf = new Intl.RelativeTimeFormat(locale, { numeric: 'auto' })
  if (abs < 60) return rtf.format(seconds, 'second')
  if (abs < 3600) return rtf.format(Math.round(seconds / 60), 'minute')
  if (abs < 86400) return rtf.format(Math.round(seconds / 3600), 'hour')
  if (abs < 86400 * 7) return rtf.format(Math.round(seconds / 86400), 'day')
  return formatDate(date, locale, DATE_ONLY)
}

export function formatCount(value, locale = 'zh-CN') {
  const n = Number(value) || 0
  return new Intl.NumberFormat(locale, { notation: n >= 10000 ? 'compact' : 'standard', maximumFractionDigits: 1 }).format(n)
}

export function formatBytes(bytes) {
  const n = Number(bytes) || 0
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`
  return `${(n / 1024 / 1024).toFixed(1)} MB`
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return '—'
  const s = Math.max(0, Math.round(seconds))
  if (s < 60) return `${s}s`
  return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`
}
