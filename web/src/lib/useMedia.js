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

/** A phone's width, where tables become lists and dialogs fill the screen (the CSS's `@media (max-width: 767px)`). */
export function usePhone() {
  return useMedia('(max-width: 767px)')
}

/**
 * The admin console's table layouts: `compact` at 1100 px and narrower, where short columns share one, and `phone`
 * at 767 px and narrower, where the rest folds under the main column: no table scrolls sideways inside its card.
 */
export function useTableLayout() {
  return { compact: useMedia('(max-width: 1100px)'), phone: usePhone() }
}
