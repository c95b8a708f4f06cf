import { describe, expect, it } from 'vitest'
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
})
