import { onBeforeUnmount, reactive, ref, watch } from 'vue'

// A server may answer a short page and a cursor to read on (the gallery's search reads a
// bounded number of works per request): up to this many pages are fetched in a row to fill one.
const MAX_PAGES_PER_FILL = 10

/**
 * A cursor-paged list with infinite scroll: fetchPage({ cursor?, pageSize }) -> { items, nextCursor }.
 * The first page goes without a cursor; the list ends when the server gives no nextCursor.
 */
export function useInfinite(fetchPage, pageSize = 24) {
  const state = reactive({ items: [], loading: false, error: null, done: false, cursor: null })
  const sentinel = ref(null)
  let generation = 0
  let observer = null

  async function more() {
    if (state.loading || state.done) return
    state.loading = true
    state.error = null
    const mine = generation
    try {
      let added = 0
      for (let page = 0; page < MAX_PAGES_PER_FILL && added < pageSize && !state.done; page += 1) {
        const query = state.cursor ? { cursor: state.cursor, pageSize } : { pageSize }
        const data = await fetchPage(query)
        if (mine !== generation) return
        const seen = new Set(state.items.map((item) => item.id))
        const fresh = data.items.filter((item) => !seen.has(item.id))
        state.items.push(...fresh)
        added += fresh.length
        state.cursor = data.nextCursor || null
        state.done = !state.cursor
      }
    } catch (e) {
      if (mine === generation) state.error = e
    } finally {
      if (mine === generation) state.loading = false
    }
  }

  function reset() {
    generation += 1
    Object.assign(state, { items: [], loading: false, error: null, done: false, cursor: null })
    return more()
  }

  watch(sentinel, (el) => {
    observer?.disconnect()
    if (!el) return
    observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && !state.error) more()
    }, { rootMargin: '400px' })
    observer.observe(el)
  })
  onBeforeUnmount(() => observer?.disconnect())

  return { state, sentinel, more, reset }
}

export function debounce(fn, ms) {
  let timer
  return (...args) => {
    clearTimeout(timer)
    timer = setTimeout(() => fn(...args), ms)
  }
}
