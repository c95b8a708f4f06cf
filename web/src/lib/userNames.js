import { reactive } from 'vue'
import { adminApi } from '@/api'

/**
 * Names for the user ids an admin list carries (code redemptions): the ids of a page are looked
 * up in one call (GET /api/admin/users?ids=…); an id not found reads "#id".
 */
export function useUserNames() {
  const names = reactive({})
  async function lookup(ids) {
    const missing = [...new Set(ids)].filter((id) => !(id in names))
    if (!missing.length) return
    try {
      const { items } = await adminApi.users({ ids: missing.join(','), pageSize: 100 })
      for (const user of items) names[user.id] = user.displayName || user.username
    } catch { /* shown by id */ }
  }
  return { lookup, nameOf: (id) => names[id] || `#${id}` }
}
