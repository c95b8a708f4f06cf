import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { authApi, creditsApi, onSessionLost, ssoApi } from '@/api'
import { session } from '@/api/session'
import { keepSsoBinding, offerProviderLogout, rememberProviderLogout } from '@/lib/sso'

export const useAuthStore = defineStore('auth', () => {
  const user = ref(session.user())
  const token = ref(session.access())
  const credits = ref(null) // { available, held }
  const sessionExpired = ref(false)

  const signedIn = computed(() => !!token.value)
  const isAdmin = computed(() => user.value?.role === 'admin')
  const available = computed(() => credits.value?.available ?? null)

  session.subscribe((current) => {
    token.value = current?.accessToken || null
    if (current?.user) user.value = current.user
    if (!current) {
      user.value = null
      credits.value = null
    }
  })
  onSessionLost(() => { sessionExpired.value = true })

  function begin(data, remember) {
    sessionExpired.value = false
    session.start(data, remember)
    user.value = data.user
    credits.value = data.credits || null
    if (!data.credits) refreshCredits()
  }

  async function login(identity, password, rememberMe) {
    const data = await authApi.login({ username: identity, password, rememberMe })
    begin(data, rememberMe)
    rememberProviderLogout(null)
    return data
  }

  /** Go to the provider's sign-in page (intent 'login', or 'link' to add it to this account). */
  async function startSso(provider, { intent = 'login', rememberMe = false, next = '/dashboard' } = {}) {
    const data = await ssoApi.start(provider, { intent, rememberMe, next })
    keepSsoBinding(data.binding)
    window.location.assign(data.authorizeUrl)
  }

  /** A session from single sign-on (the exchange's or the sign-up's answer). */
  function beginSso(data, providerName, remember) {
    begin(data, remember)
    rememberProviderLogout(data.logoutUrl, providerName)
  }

  /** A new account stays signed in like "remember me": the server gives the long refresh token. */
  async function register(form) {
    const data = await authApi.register({ ...form, rememberMe: true })
    begin(data, true)
    rememberProviderLogout(null)
    return data
  }

  async function logout() {
    try {
      if (token.value) await authApi.logout()
    } catch {
      /* the session ends here either way */
    }
    offerProviderLogout()
    session.clear()
  }

  async function fetchProfile() {
    if (!token.value) return null
    const data = await authApi.profile()
    user.value = { ...user.value, ...data.user }
    session.setUser(user.value)
    return user.value
  }

  async function refreshCredits() {
    if (!token.value) return null
    try {
      credits.value = await creditsApi.balance()
    } catch {
      /* shown as unknown; the next credits.changed event fills it */
    }
    return credits.value
  }

  function setCredits(value) {
    credits.value = { available: value.available, held: value.held }
  }

  function setUser(next) {
    user.value = { ...user.value, ...next }
    session.setUser(user.value)
  }

  return { user, token, credits, signedIn, isAdmin, available, sessionExpired,
    login, register, logout, startSso, beginSso, fetchProfile, refreshCredits, setCredits, setUser }
})
