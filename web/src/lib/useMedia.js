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
