import { onBeforeUnmount, reactive, ref, watch } from 'vue'

/**
 * Paged list with infinite scroll: load(params) -> { items, total, nextCursor? }.
 * Uses the cursor when the server gives one, else page numbers.
 */
export function useInfinite(fetchPage, pageSize = 24) {
  const state = reactive({ items: [], total: 0, loading: false, error: null, done: false, page: 0, cursor: null })
  const sentinel = ref(null)
  let generation = 0
  let observer = null

  async function more() {
    if (state.loading || state.done) return
    state.loading = true
    state.error = null
    const mine = generation
    try {
      const query = state.cursor ? { cursor: state.cursor, pageSize } : { page: state.page + 1, pageSize }
      const data = await fetchPage(query)
      if (mine !== generation) return
      const seen = new Set(state.items.map((item) => item.id))
      state.items.push(...data.items.filter((item) => !seen.has(item.id)))
      state.total = data.total ?? state.items.length
      state.page += 1
      state.cursor = data.nextCursor || null
      state.done = data.nextCursor ? false : (data.items.length < pageSize || state.items.length >= state.total)
    } catch (e) {
      if (mine === generation) state.error = e
    } finally {
      if (mine === generation) state.loading = false
    }
  }

  function reset() {
    generation += 1
    Object.assign(state, { items: [], total: 0, loading: false, error: null, done: false, page: 0, cursor: null })
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
