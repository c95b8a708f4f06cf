import { defineStore } from 'pinia'
import { ref } from 'vue'
import { notificationsApi } from '@/api'

export const useNotificationStore = defineStore('notifications', () => {
  const unread = ref(0)
  const available = ref(true) // false when the server has no notifications API
  const latest = ref(null) // the last notification pushed live
  const version = ref(0) // bumps on every change so open lists can reload

  async function refresh() {
    try {
      const data = await notificationsApi.unreadCount()
      unread.value = data?.unreadCount ?? 0
      available.value = true
    } catch (error) {
      if (error.status === 404) available.value = false
    }
  }

  function pushed(notification) {
    latest.value = notification
    if (!notification || !notification.isRead) unread.value += 1
    version.value += 1
  }

  function reset() {
    unread.value = 0
    latest.value = null
  }

  return { unread, available, latest, version, refresh, pushed, reset }
})
