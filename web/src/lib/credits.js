/** Credit history helpers: what an entry spent, and spending per local day (the server groups the ledger by job). */

export const ENTRY_TYPES = ['signup_bonus', 'hold', 'capture', 'release', 'admin_grant', 'admin_deduct', 'redeem']

/** Credits actually spent by one ledger entry (a hold only reserves; a capture spends). */
export function spentBy(entry) {
  if (entry.type === 'capture') return Math.max(0, -(entry.heldChange || 0))
  if (entry.type === 'admin_deduct') return Math.max(0, -(entry.amount || 0))
  return 0
}

function dayKey(date, timeZone) {
  const parts = new Intl.DateTimeFormat('en-CA', { year: 'numeric', month: '2-digit', day: '2-digit', timeZone }).format(date)
  return parts // YYYY-MM-DD
}

/** [{ day: 'YYYY-MM-DD', spent }] for the last `days` local days, oldest first. */
export function dailySpending(entries, days = 30, now = new Date(), timeZone = undefined) {
  const buckets = new Map()
  for (let i = days - 1; i >= 0; i -= 1) {
    buckets.set(dayKey(new Date(now.getTime() - i * 86400000), timeZone), 0)
  }
  for (const entry of entries) {
    const date = new Date(entry.createdAt)
    if (Number.isNaN(date.getTime())) continue
    const key = dayKey(date, timeZone)
    if (buckets.has(key)) buckets.set(key, buckets.get(key) + spentBy(entry))
  }
  return [...buckets].map(([day, spent]) => ({ day, spent }))
}
