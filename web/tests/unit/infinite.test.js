import { describe, expect, it } from 'vitest'
import { useInfinite } from '../../src/lib/useInfinite.js'

function pagesOf(pages) {
  const asked = []
  const fetchPage = async (query) => {
    asked.push(query.cursor || null)
    return pages[query.cursor || 'first']
  }
  return { asked, fetchPage }
}

describe('an infinite list', () => {
  it('reads on through short pages until one is filled', async () => {
    const { asked, fetchPage } = pagesOf({
      first: { items: [{ id: 1 }], nextCursor: 'a' },
      a: { items: [], nextCursor: 'b' },
      b: { items: [{ id: 2 }, { id: 3 }], nextCursor: 'c' },
      c: { items: [{ id: 4 }], nextCursor: null },
    })
    const { state, more } = useInfinite(fetchPage, 3)
    await more()
    expect(state.items.map((item) => item.id)).toEqual([1, 2, 3])
    expect(asked).toEqual([null, 'a', 'b'])
    expect(state.done).toBe(false)
    await more()
    expect(state.items.map((item) => item.id)).toEqual([1, 2, 3, 4])
    expect(state.done).toBe(true)
  })

  it('stops after a bounded number of empty pages and lets the next scroll go on', async () => {
    const pages = { first: { items: [], nextCursor: 'p1' } }
    for (let i = 1; i < 30; i += 1) pages[`p${i}`] = { items: [], nextCursor: `p${i + 1}` }
    const { asked, fetchPage } = pagesOf(pages)
    const { state, more } = useInfinite(fetchPage, 24)
    await more()
    expect(asked.length).toBe(10)
    expect(state.done).toBe(false)
    expect(state.loading).toBe(false)
  })
})
