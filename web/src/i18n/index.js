import { createI18n } from 'vue-i18n'
import zhCN from './zh-CN'
import en from './en'

const KEY = 'aigc.locale'
export const LOCALES = ['zh-CN', 'en']

function initial() {
  try {
    const saved = window.localStorage.getItem(KEY)
    if (LOCALES.includes(saved)) return saved
  } catch {
    /* storage unavailable */
  }
  return 'zh-CN'
}

export const i18n = createI18n({
  legacy: false,
  locale: initial(),
  fallbackLocale: 'zh-CN',
  messages: { 'zh-CN': zhCN, en },
  missingWarn: false,
  fallbackWarn: false,
})

export function currentLocale() {
  return i18n.global.locale.value
}

export function setLocale(locale) {
  if (!LOCALES.includes(locale)) return
  i18n.global.locale.value = locale
  document.documentElement.lang = locale
  try {
    window.localStorage.setItem(KEY, locale)
  } catch {
    /* storage unavailable */
  }
}

document.documentElement.lang = initial()
