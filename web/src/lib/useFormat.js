import { useI18n } from 'vue-i18n'
import { DATE_ONLY, formatCount, formatDate, formatRelative } from './format'

/** Formatting bound to the current UI locale. */
export function useFormat() {
  const { locale } = useI18n()
  return {
    date: (value) => formatDate(value, locale.value),
    day: (value) => formatDate(value, locale.value, DATE_ONLY),
    relative: (value) => formatRelative(value, locale.value),
    count: (value) => formatCount(value, locale.value),
  }
}

/** The API's error message, or a translated fallback. */
export function errorText(t, error) {
  if (!error) return ''
  if (error.code === 'NETWORK_ERROR') return t('common.networkError')
  if (error.code === 'RATE_LIMITED') return t('common.rateLimited', { s: error.details?.retryAfter ?? '—' })
  if (error.status === 404 && String(error.code).startsWith('HTTP_')) return t('common.notAvailable')
  return error.message || t('common.unknownError')
}
