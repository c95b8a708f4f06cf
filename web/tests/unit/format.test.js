import { describe, expect, it } from 'vitest'
import { formatDate, formatRelative, formatDuration, DATE_ONLY, MONTH_DAY } from '../../src/lib/format.js'

describe('dates', () => {
  const iso = '2024-03-05T14:07:00Z'
  it('formats API timestamps in the locale and time zone', () => {
    expect(formatDate(iso, 'en-US', undefined, 'UTC')).toBe('03/05/2024, 02:07 PM')
    expect(formatDate(iso, 'zh-CN', undefined, 'Asia/Shanghai')).toBe('2024/03/05 22:07')
    expect(formatDate(iso, 'zh-CN', DATE_ONLY, 'UTC')).toBe('2024/03/05')
    expect(formatDate(iso, 'zh-CN', MONTH_DAY, 'UTC')).toBe('3月5日')
    expect(formatDate(iso, 'en-US', MONTH_DAY, 'UTC')).toBe('Mar 5')
  })
  it('never prints Invalid Date', () => {
    for (const bad of [null, undefined, '', 'not a date']) expect(formatDate(bad)).toBe('—')
    expect(formatRelative('garbage')).toBe('—')
  })
  it('speaks relatively about recent times', () => {
    const now = Date.parse(iso)
    expect(formatRelative('2024-03-05T14:02:00Z', 'en', now)).toBe('5 minutes ago')
    expect(formatRelative('2024-03-04T14:07:00Z', 'en', now)).toBe('yesterday')
  })
  it('formats durations', () => {
    expect(formatDuration(5.4)).toBe('5s')
    expect(formatDuration(75)).toBe('1m 15s')
    expect(formatDuration(null)).toBe('—')
  })
})
