import { onBeforeUnmount } from 'vue'

const typingIn = (el) => /^(INPUT|TEXTAREA|SELECT)$/.test(el?.tagName || '') || el?.isContentEditable

/**
 * Page keyboard shortcuts while the component lives. handlers: { slash, submit } —
 * "/" (outside text fields) and Ctrl/⌘+Enter (anywhere).
 */
export function useShortcuts(handlers) {
  function onKey(event) {
    if (handlers.submit && event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault()
      handlers.submit()
      return
    }
    if (handlers.slash && event.key === '/' && !event.ctrlKey && !event.metaKey && !event.altKey && !typingIn(event.target)) {
      event.preventDefault()
      handlers.slash()
    }
  }
  window.addEventListener('keydown', onKey)
  onBeforeUnmount(() => window.removeEventListener('keydown', onKey))
}
