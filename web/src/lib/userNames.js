import { reactive } from 'vue'
import { adminApi } from '@/api'

/**
 * Names for the user ids admin lists carry (jobs, workers). The users API has no lookup by id,
 * so the first 100 users are read once and unknown ids are shown as "#id".
 */
const names = reactive({})
let loading = null

export function useUserNames() {
  if (!loading) {
    loading = adminApi.users({ page: 1, pageSize: 100 })
      .then(({ items }) => { for (const user of items) names[user.id] = user.displayName || user.username })
      .catch(() => { loading = null })
  }
  return (id) => names[id] || `#${id}`
}
