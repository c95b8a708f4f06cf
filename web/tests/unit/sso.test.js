import { beforeEach, describe, expect, it } from 'vitest'
import { keepSsoBinding, offerProviderLogout, readLanding, rememberProviderLogout, safeNext, takeProviderLogoutOffer,
  takeSsoBinding } from '../../src/lib/sso.js'

class MemoryStorage {
  constructor() { this.items = new Map() }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null }
  setItem(key, value) { this.items.set(key, String(value)) }
  removeItem(key) { this.items.delete(key) }
}

beforeEach(() => {
  globalThis.window = { sessionStorage: new MemoryStorage() }
})

describe('the landing fragment', () => {
  it('reads a ticket or an error', () => {
    expect(readLanding('#ticket=abc&provider=idp')).toEqual({ ticket: 'abc', error: '', message: '', provider: 'idp' })
    expect(readLanding('#error=STATE_INVALID&message=%E4%BC%81&provider=wecom'))
      .toEqual({ ticket: '', error: 'STATE_INVALID', message: '企', provider: 'wecom' })
    expect(readLanding('')).toEqual({ ticket: '', error: '', message: '', provider: '' })
  })
  it('goes on only to paths of this site', () => {
    expect(safeNext('/create?x=1')).toBe('/create?x=1')
    for (const bad of ['//evil.example', 'https://evil.example', '/\\evil.example', '', null, undefined]) {
      expect(safeNext(bad)).toBe('/dashboard')
    }
  })
})

describe('what the tab keeps', () => {
  it('spends the binding once', () => {
    keepSsoBinding('secret')
    expect(takeSsoBinding()).toBe('secret')
    expect(takeSsoBinding()).toBe('')
  })
  it('offers the provider logout once, only after signing out of a provider session', () => {
    rememberProviderLogout('https://idp.example/logout?client_id=a', 'Staff login')
    expect(takeProviderLogoutOffer()).toBeNull()
    offerProviderLogout()
    expect(takeProviderLogoutOffer()).toEqual({ url: 'https://idp.example/logout?client_id=a', providerName: 'Staff login' })
    expect(takeProviderLogoutOffer()).toBeNull()
    rememberProviderLogout('javascript:alert(1)', 'x')
    offerProviderLogout()
    expect(takeProviderLogoutOffer()).toBeNull()
  })
})
