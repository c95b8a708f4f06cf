import { describe, expect, it, vi } from 'vitest'
import { ApiError, createHttp } from '../../src/api/http.js'

function json(status, body) {
  return { ok: status >= 200 && status < 300, status, statusText: '', headers: new Headers({ 'content-type': 'application/json' }),
    json: async () => body, blob: async () => new Blob([JSON.stringify(body)]) }
}

function memorySession(access = 'A1', refresh = 'R1') {
  const state = { access, refresh, cleared: false }
  return {
    state,
    access: () => state.access,
    refresh: () => state.refresh,
    update: (data) => { state.access = data.accessToken; state.refresh = data.refreshToken || state.refresh },
    clear: () => { state.access = null; state.refresh = null; state.cleared = true },
  }
}

describe('http wrapper', () => {
  it('sends the bearer token and unwraps the envelope', async () => {
    const fetchImpl = vi.fn(async () => json(200, { success: true, data: { available: 500, held: 0 } }))
    const http = createHttp({ fetchImpl, session: memorySession() })
    await expect(http.get('/api/users/credits', { query: { page: 2, empty: '', none: null } })).resolves.toEqual({ available: 500, held: 0 })
    const [url, init] = fetchImpl.mock.calls[0]
    expect(url).toBe('/api/users/credits?page=2')
    expect(init.headers.Authorization).toBe('Bearer A1')
  })

  it('sends the interface language, so refusals come back in it', async () => {
    const fetchImpl = vi.fn(async () => json(200, { success: true, data: {} }))
    const http = createHttp({ fetchImpl, session: memorySession(), language: () => 'en' })
    await http.post('/api/generate', {})
    expect(fetchImpl.mock.calls[0][1].headers['Accept-Language']).toBe('en')
  })

  it('throws an ApiError with the code, message, details and status', async () => {
    const fetchImpl = async () => json(402, { success: false, error: { code: 'INSUFFICIENT_CREDITS', message: 'Short', details: { shortfall: 15 } } })
    const http = createHttp({ fetchImpl, session: memorySession() })
    const error = await http.post('/api/generate', {}).catch((e) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({ status: 402, code: 'INSUFFICIENT_CREDITS', message: 'Short', details: { shortfall: 15 } })
  })

  it('refreshes once on TOKEN_EXPIRED and retries with the new token', async () => {
    const session = memorySession()
    const seen = []
    const fetchImpl = vi.fn(async (url, init) => {
      seen.push([url, init.headers.Authorization])
      if (url === '/api/users/token/refresh') return json(200, { success: true, data: { accessToken: 'A2', refreshToken: 'R2' } })
      if (init.headers.Authorization === 'Bearer A1') return json(401, { success: false, error: { code: 'TOKEN_EXPIRED', message: 'expired' } })
      return json(200, { success: true, data: { ok: true } })
    })
    const onLogout = vi.fn()
    const http = createHttp({ fetchImpl, session, onLogout })
    const results = await Promise.all([http.get('/api/a'), http.get('/api/b')])
    expect(results).toEqual([{ ok: true }, { ok: true }])
    expect(seen.filter(([url]) => url === '/api/users/token/refresh')).toHaveLength(1)
    expect(JSON.parse(fetchImpl.mock.calls.find(([u]) => u === '/api/users/token/refresh')[1].body)).toEqual({ refreshToken: 'R1' })
    expect(session.state).toMatchObject({ access: 'A2', refresh: 'R2' })
    expect(onLogout).not.toHaveBeenCalled()
  })

  it('logs out when the refresh fails', async () => {
    const session = memorySession()
    const fetchImpl = async (url) => (url === '/api/users/token/refresh'
      ? json(401, { success: false, error: { code: 'REFRESH_TOKEN_INVALID', message: 'no' } })
      : json(401, { success: false, error: { code: 'TOKEN_EXPIRED', message: 'expired' } }))
    const onLogout = vi.fn()
    const http = createHttp({ fetchImpl, session, onLogout })
    await expect(http.get('/api/x')).rejects.toMatchObject({ status: 401, code: 'TOKEN_EXPIRED' })
    expect(session.state.cleared).toBe(true)
    expect(onLogout).toHaveBeenCalledTimes(1)
  })

  it('does not log out on a 401 of an anonymous call (wrong password)', async () => {
    const session = memorySession(null, null)
    const onLogout = vi.fn()
    const http = createHttp({ fetchImpl: async () => json(401, { success: false, error: { code: 'INVALID_CREDENTIALS', message: 'bad' } }), session, onLogout })
    await expect(http.post('/api/users/login', {}, { auth: false })).rejects.toMatchObject({ code: 'INVALID_CREDENTIALS' })
    expect(onLogout).not.toHaveBeenCalled()
  })

  it('turns network failures and non-JSON errors into ApiErrors', async () => {
    const down = createHttp({ fetchImpl: async () => { throw new TypeError('fetch failed') }, session: memorySession() })
    await expect(down.get('/api/x')).rejects.toMatchObject({ status: 0, code: 'NETWORK_ERROR' })
    const html = { ok: false, status: 502, statusText: 'Bad Gateway', headers: new Headers({ 'content-type': 'text/html' }), json: async () => ({}) }
    const bad = createHttp({ fetchImpl: async () => html, session: memorySession() })
    await expect(bad.get('/api/x')).rejects.toMatchObject({ status: 502, code: 'HTTP_502' })
  })
})
