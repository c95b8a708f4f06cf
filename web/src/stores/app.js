import { defineStore } from 'pinia'
import { ref } from 'vue'
import { renderApi } from '@/api'
import { setLocale, currentLocale } from '@/i18n'

export const useAppStore = defineStore('app', () => {
  const locale = ref(currentLocale())
  const health = ref(null)
  const catalog = ref(null)
  const catalogError = ref(null)
  let catalogPromise = null

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

  return { locale, health, catalog, catalogError, switchLocale, loadHealth, loadCatalog }
})
