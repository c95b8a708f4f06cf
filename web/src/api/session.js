/** Where the tokens live: localStorage when "remember me", else sessionStorage. */
const KEY = 'aigc.session'

function stores() {
  if (typeof window === 'undefined') return []
  return [window.localStorage, window.sessionStorage]
}

function load() {
  for (const store of stores()) {
    try {
      const raw = store.getItem(KEY)
      if (raw) return { ...JSON.parse(raw), persistent: store === window.localStorage }
    } catch {
      /* unreadable entry: ignore */
    }
  }
  return null
}

let current = load()
const listeners = new Set()

function save() {
  for (const store of stores()) store.removeItem(KEY)
  if (!current) return
  const target = current.persistent ? window.localStorage : window.sessionStorage
  const { persistent, ...rest } = current
  target.setItem(KEY, JSON.stringify(rest))
}

export const session = {
  access: () => current?.accessToken || null,
  refresh: () => current?.refreshToken || null,
  user: () => current?.user || null,
  start(data, persistent) {
    current = { accessToken: data.accessToken, refreshToken: data.refreshToken || null, user: data.user, persistent }
    save()
    listeners.forEach((fn) => fn(current))
  },
  update(data) {
    if (!current) return
    current = {
      ...current,
      accessToken: data.accessToken,
      refreshToken: data.refreshToken || current.refreshToken,
      // Token answers carry a short user record: keep what the profile taught us (avatar, bio…).
      user: data.user ? { ...current.user, ...data.user } : current.user,
    }
    save()
    listeners.forEach((fn) => fn(current))
  },
  setUser(user) {
    if (!current) return
    current = { ...current, user }
    save()
  },
  clear() {
    current = null
    save()
    listeners.forEach((fn) => fn(null))
  },
  subscribe(fn) {
    listeners.add(fn)
    return () => listeners.delete(fn)
  },
}
