/**
 * Single sign-on in the browser. Starting a sign-in keeps the server's binding secret in this
 * tab (sessionStorage survives the trip to the provider and back, and no other tab or site
 * can read it); the landing page presents it with the one-time ticket it finds in the URL
 * fragment. A session begun with a provider that has a logout page remembers it, so that
 * signing out can offer to leave the provider too.
 */
const BINDING = 'aigc.sso.binding'
const LOGOUT = 'aigc.sso.logout'        // the current session's provider logout page
const LOGOUT_OFFER = 'aigc.sso.logoutOffer' // offered once on the sign-in page after signing out

function store() {
  return typeof window === 'undefined' ? null : window.sessionStorage
}

export function keepSsoBinding(binding) {
  store()?.setItem(BINDING, binding)
}

/** The binding secret of the sign-in this tab started ('' if none); it is spent by reading. */
export function takeSsoBinding() {
  const binding = store()?.getItem(BINDING) || ''
  store()?.removeItem(BINDING)
  return binding
}

/** What the callback page found in its fragment: { ticket } or { error, message }, and the provider. */
export function readLanding(hash) {
  const params = new URLSearchParams(String(hash || '').replace(/^#/, ''))
  return { ticket: params.get('ticket') || '', error: params.get('error') || '', message: params.get('message') || '',
    provider: params.get('provider') || '' }
}

/** A path of this site to go to afterwards (never another site). */
export function safeNext(next) {
  const ok = typeof next === 'string' && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\')
  return ok ? next : '/dashboard'
}

/** Remember (or, with no url, forget) the provider logout page of the session just begun. */
export function rememberProviderLogout(url, providerName) {
  if (url && /^https?:\/\//.test(url)) store()?.setItem(LOGOUT, JSON.stringify({ url, providerName }))
  else store()?.removeItem(LOGOUT)
}

/** At sign-out: the provider logout of the ended session becomes an offer for the sign-in page. */
export function offerProviderLogout() {
  const value = store()?.getItem(LOGOUT)
  store()?.removeItem(LOGOUT)
  if (value) store()?.setItem(LOGOUT_OFFER, value)
}

/** The offer made at the last sign-out, once: { url, providerName } or null. */
export function takeProviderLogoutOffer() {
  const raw = store()?.getItem(LOGOUT_OFFER)
  store()?.removeItem(LOGOUT_OFFER)
  try {
    const value = raw ? JSON.parse(raw) : null
    return value && /^https?:\/\//.test(value.url) ? value : null
  } catch {
    return null
  }
}
