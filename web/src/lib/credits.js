/** Credit history helpers: what an entry spent, and spending per local day. */

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

const JOB_TYPES = new Set(['hold', 'capture', 'release'])

/**
 * The ledger as a person reads it: one line per render job instead of its hold, captures and
 * release (entries of a job share its id as `reference`), other entries as they are.
 * Returns [{ kind: 'job', jobId, amount, images, createdAt, entries } | { kind: 'entry', entry, amount, createdAt }],
 * newest first. `amount` is the net change of the available balance; `images` how many were charged.
 */
export function groupByJob(entries) {
  const rows = []
  const jobs = new Map()
  for (const entry of entries) {
    if (!JOB_TYPES.has(entry.type) || !entry.reference) {
      rows.push({ kind: 'entry', entry, amount: entry.amount, createdAt: entry.createdAt })
      continue
    }
    let row = jobs.get(entry.reference)
    if (!row) {
      row = { kind: 'job', jobId: entry.reference, amount: 0, held: 0, charged: 0, captures: 0, createdAt: entry.createdAt, entries: [] }
      jobs.set(entry.reference, row)
      rows.push(row)
    }
    row.entries.push(entry)
    row.amount += entry.amount || 0
    row.held += entry.type === 'hold' ? entry.heldChange || 0 : 0
    if (entry.type === 'capture') {
      row.charged += Math.max(0, -(entry.heldChange || 0))
      row.captures += 1
    }
    if (entry.createdAt < row.createdAt) row.createdAt = entry.createdAt
  }
  // A job whose hold is still open has spent what it holds so far; once closed, what it captured.
  for (const row of rows) {
    if (row.kind !== 'job') continue
    const open = !row.entries.some((e) => e.type === 'release') && row.charged < row.held
    row.open = open
    row.spent = open ? row.held : row.charged
    row.images = row.captures
  }
  return rows
}
