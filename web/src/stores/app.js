import { defineStore } from 'pinia'
import { ref } from 'vue'
import { renderApi } from '@/api'
import { setLocale, currentLocale } from '@/i18n'

const THEME_KEY = 'aigc.theme'
export const THEMES = ['system', 'light', 'dark']

function savedTheme() {
  try {
    const value = window.localStorage.getItem(THEME_KEY)
    return THEMES.includes(value) ? value : 'system'
  } catch {
    return 'system'
  }
}

export const useAppStore = defineStore('app', () => {
  const locale = ref(currentLocale())
  const health = ref(null)
  const catalog = ref(null)
  const catalogError = ref(null)
  const theme = ref(savedTheme()) // what the user chose
  const dark = ref(false) // what is shown
  let catalogPromise = null

  const systemDark = window.matchMedia('(prefers-color-scheme: dark)')
  function applyTheme() {
    dark.value = theme.value === 'dark' || (theme.value === 'system' && systemDark.matches)
    document.documentElement.classList.toggle('dark', dark.value)
  }
  systemDark.addEventListener('change', applyTheme)
  applyTheme()

  function setTheme(next) {
    if (!THEMES.includes(next)) return
    theme.value = next
    try { window.localStorage.setItem(THEME_KEY, next) } catch { /* storage unavailable */ }
    applyTheme()
  }

  function switchLocale(next) {
    setLocale(next)
    locale.value = next
  }

  async function loadHealth() {
    try {
      health.value = await renderApi.health()
    } catch {
      health.value = null
    }
  }

  async function loadCatalog(force = false) {
    if (catalog.value && !force) return catalog.value
    if (!catalogPromise || force) {
      catalogError.value = null
      catalogPromise = renderApi.catalog()
        .then((data) => { catalog.value = data; return data })
        .catch((error) => { catalogError.value = error; catalogPromise = null; throw error })
    }
    return catalogPromise
  }

  /** The UI language as the catalog's label keys name it. */
  const lang = () => (locale.value === 'en' ? 'en' : 'zh')

  return { locale, health, catalog, catalogError, theme, dark, setTheme, switchLocale, loadHealth, loadCatalog, lang }
})
