/**
 * The one fetch wrapper: bearer token, envelope unwrapping, typed errors, and a single
 * refresh-and-retry when the access token has expired.
 */

export class ApiError extends Error {
  constructor({ status = 0, code = 'UNKNOWN', message = '', details = null } = {}) {
    super(message || code)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.details = details
  }
}

function buildUrl(baseUrl, path, query) {
  let url = `${baseUrl}${path}`
  if (query) {
    const params = new URLSearchParams()
    for (const [key, value] of Object.entries(query)) {
      if (value === undefined || value === null || value === '') continue
      params.append(key, String(value))
    }
    const text = params.toString()
    if (text) url += (url.includes('?') ? '&' : '?') + text
  }
  return url
}

async function readEnvelope(response) {
  const type = response.headers.get('content-type') || ''
  if (!type.includes('application/json')) return null
  try {
    return await response.json()
  } catch {
    return null
  }
}

/**
 * session: { access(): string|null, refresh(): string|null, update(data), clear() }
 * onLogout(): called once the session is gone (refresh failed or impossible).
 */
export function createHttp({ baseUrl = '', fetchImpl = (...a) => fetch(...a), session, onLogout = () => {}, language = () => null }) {
  let refreshing = null

  async function refreshOnce() {
    const refreshToken = session.refresh()
    if (!refreshToken) return false
    if (!refreshing) {
      refreshing = (async () => {
        try {
          const data = await send('POST', '/api/users/token/refresh', { body: { refreshToken }, auth: false, retry: false })
          session.update(data)
          return true
        } catch {
          return false
        } finally {
          queueMicrotask(() => { refreshing = null })
        }
      })()
    }
    return refreshing
  }

  async function send(method, path, options = {}) {
    const { body, query, headers = {}, auth = true, retry = true, form, blob = false, signal } = options
    const init = { method, headers: { Accept: 'application/json', ...headers }, signal }
    const lang = language()
    if (lang) init.headers['Accept-Language'] = lang // localised refusals (CONTENT_REJECTED names a category)
    if (form) {
      init.body = form
    } else if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json'
      init.body = JSON.stringify(body)
    }
    const token = auth ? session.access() : null
    if (token) init.headers.Authorization = `Bearer ${token}`

    let response
    try {
      response = await fetchImpl(buildUrl(baseUrl, path, query), init)
    } catch (error) {
      if (error && error.name === 'AbortError') throw error
      throw new ApiError({ status: 0, code: 'NETWORK_ERROR', message: 'Network error' })
    }

    if (response.ok && blob) return response.blob()
    const envelope = await readEnvelope(response)

    if (response.ok) {
      if (envelope && envelope.success === false) throw new ApiError({ status: response.status, ...envelope.error })
      return envelope ? envelope.data : null
    }

    const error = new ApiError({
      status: response.status,
      code: envelope?.error?.code || `HTTP_${response.status}`,
      message: envelope?.error?.message || response.statusText || `HTTP ${response.status}`,
      details: envelope?.error?.details ?? null,
    })
    if (response.status === 401 && token) {
      if (error.code === 'TOKEN_EXPIRED' && retry && (await refreshOnce())) {
        return send(method, path, { ...options, retry: false })
      }
      session.clear()
      onLogout(error)
    }
    throw error
  }

  return {
    request: send,
    get: (path, options) => send('GET', path, options),
    post: (path, body, options) => send('POST', path, { ...options, body }),
    put: (path, body, options) => send('PUT', path, { ...options, body }),
    del: (path, options) => send('DELETE', path, options),
    upload: (path, form, options) => send('POST', path, { ...options, form }),
    blob: (path, options) => send('GET', path, { ...options, blob: true }),
    refresh: refreshOnce,
  }
}
