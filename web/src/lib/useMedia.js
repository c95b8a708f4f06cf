import { onBeforeUnmount, ref } from 'vue'

/** A reactive CSS media query (e.g. "(max-width: 767px)"). */
export function useMedia(query) {
  const list = window.matchMedia(query)
  const matches = ref(list.matches)
  const update = (event) => { matches.value = event.matches }
  list.addEventListener('change', update)
  onBeforeUnmount(() => list.removeEventListener('change', update))
  return matches
}

/**
 * The admin console's table layouts: `compact` below 1101 px, where short columns share one, and `phone` below
 * 768 px, where the rest folds under the main column, so that no table scrolls sideways inside its card.
 */
export function useTableLayout() {
  return { compact: useMedia('(max-width: 1100px)'), phone: useMedia('(max-width: 767px)') }
}
