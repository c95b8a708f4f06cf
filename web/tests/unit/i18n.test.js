import { describe, expect, it } from 'vitest'
import { createI18n } from 'vue-i18n'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import zh from '../../src/i18n/zh-CN.js'
import en from '../../src/i18n/en.js'

function keys(obj, prefix = '') {
  return Object.entries(obj).flatMap(([k, v]) => (typeof v === 'object' ? keys(v, `${prefix}${k}.`) : [`${prefix}${k}`]))
}
function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? files(path) : /\.(vue|js)$/.test(name) ? [path] : []
  })
}

describe('messages', () => {
  it('has the same keys in Chinese and English', () => {
    expect(keys(en).sort()).toEqual(keys(zh).sort())
  })
  it('has every static key the code uses', () => {
    const known = new Set(keys(zh))
    const used = new Set()
    for (const file of files(join(__dirname, '../../src'))) {
      const text = readFileSync(file, 'utf8')
      for (const m of text.matchAll(/\bt\(\s*'([a-zA-Z]+\.[a-zA-Z0-9_.]+)'/g)) used.add(m[1])
      for (const m of text.matchAll(/'((?:create|auth)\.(?:reasons|cfgLabels|stepsLabels)\.[a-zA-Z]+)'/g)) used.add(m[1])
    }
    expect([...used].filter((key) => !known.has(key))).toEqual([])
  })
  it('says one credit, one job in English', () => {
    const { t } = createI18n({ legacy: false, locale: 'en', messages: { en } }).global
    expect(t('errors.refunded', { n: 1 }, 1)).toBe('1 credit refunded')
    expect(t('errors.refunded', { n: 15 }, 15)).toBe('15 credits refunded')
    expect(t('jobs.charged', { n: 1 }, 1)).toBe('1 credit charged')
    expect(t('jobs.cancelledRefund', { n: 1 }, 1)).toBe('Job cancelled, 1 credit refunded')
    expect(t('credits.redeemed', { n: 1 }, 1)).toBe('Redeemed: 1 credit added')
    expect(t('admin.sa.limits', { n: 1 }, 1)).toBe('up to 1 job at once')
    expect(t('notifications.types.credits_granted', { amount: 1, reason: 'thanks' }, 1)).toBe('You received 1 credit: thanks')
  })
})
