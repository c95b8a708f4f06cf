import { useI18n } from 'vue-i18n'
import { i18n } from '@/i18n'
import { DATE_ONLY, MONTH_DAY, formatCount, formatDate, formatRelative } from './format'
import { scrubDetail } from './errors'

/** Formatting bound to the current UI locale. */
export function useFormat() {
  const { locale } = useI18n()
  return {
    date: (value) => formatDate(value, locale.value),
    day: (value) => formatDate(value, locale.value, DATE_ONLY),
    monthDay: (value) => formatDate(value, locale.value, MONTH_DAY),
    relative: (value) => formatRelative(value, locale.value),
    count: (value) => formatCount(value, locale.value),
  }
}

/** An API error in the UI's language: by its code when we know it, else the server's message without internal addresses. */
export function errorText(t, error) {
  if (!error) return ''
  if (error.code === 'NETWORK_ERROR') return t('common.networkError')
  if (error.code === 'RATE_LIMITED') return t('common.rateLimited', { s: error.details?.retryAfter ?? '—' })
  if (error.status === 404 && String(error.code).startsWith('HTTP_')) return t('common.notAvailable')
  if (error.code && i18n.global.te(`errors.api.${error.code}`)) return t(`errors.api.${error.code}`, error.details || {})
  return scrubDetail(error.message, t('errors.internalAddress')) || t('common.unknownError')
}
