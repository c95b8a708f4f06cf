import { ref } from 'vue'
import { worksApi } from '@/api'

/**
 * The lightbox over a list of works. List items carry no generation parameters, so the
 * work's full record is fetched when it is shown and merged into the item.
 */
export function useWorkViewer() {
  const index = ref(null)
  const loading = new Set()

  async function complete(item) {
    if (!item || item.params || loading.has(item.id)) return
    loading.add(item.id)
    try {
      const { work } = await worksApi.get(item.id)
      Object.assign(item, { ...work, views: Math.max(work.views || 0, item.views || 0) })
    } catch { /* the card's own fields still show */ } finally {
      loading.delete(item.id)
    }
  }

  function openAt(items, item) {
    index.value = items.indexOf(item)
  }

  return { index, complete, openAt }
}
