/**
 * One authenticated WebSocket per tab. Reconnects with exponential back-off and, once the
 * server says "ready", asks it to replay each unfinished job's events after the last one
 * this tab has seen, so nothing between two connections is lost and nothing is applied twice.
 * A job's final event is delivered at least once (the server may send it again after a crash,
 * as a new stream entry): it carries an `eventId` of its own, and a repeat is dropped here.
 */

const TERMINAL = new Set(['job.succeeded', 'job.failed', 'job.cancelled'])
const FINALS_KEPT = 500 // final events remembered by eventId, oldest forgotten first
export const UNAUTHORIZED_CLOSE = 4401
/** The user opened live events in too many tabs and this one, the oldest, gave way. */
export const REPLACED_CLOSE = 4429

/** Compare two Redis stream ids ("<ms>-<seq>"); "0" is before everything. */
export function compareStreamIds(a, b) {
  const [am, as = '0'] = String(a).split('-')
  const [bm, bs = '0'] = String(b).split('-')
  const dm = Number(am) - Number(bm)
  return dm !== 0 ? Math.sign(dm) : Math.sign(Number(as) - Number(bs))
}

export function backoffDelay(attempt, { base = 1000, max = 30000 } = {}, random = Math.random) {
  const ceiling = Math.min(max, base * 2 ** attempt)
  return Math.round(ceiling / 2 + (ceiling / 2) * random())
}

export class LiveSocket {
  /**
   * @param {object} o
   * @param {() => string|null} o.url      URL with a fresh token, or null when signed out
   * @param {Function} o.WebSocketImpl
   * @param {(event) => void} o.onEvent
   * @param {(status, info) => void} [o.onStatus]  'connecting' | 'open' | 'closed'
   * @param {() => Promise<boolean>} [o.onUnauthorized]  true when the token was renewed
   */
  constructor({ url, WebSocketImpl, onEvent, onStatus = () => {}, onUnauthorized = async () => false,
    backoff = {}, random = Math.random, timers = globalThis }) {
    Object.assign(this, { url, WebSocketImpl, onEvent, onStatus, onUnauthorized, backoff, random, timers })
    this.ws = null
    this.attempt = 0
    this.stopped = true
    this.timer = null
    this.everOpened = false
    this.replaced = false // closed by REPLACED_CLOSE: not reconnected until start() is called again
    this.lastIds = new Map() // jobId -> last stream id seen ("0" = none yet)
    this.finals = new Set() // eventIds of the final events applied
  }

  start() {
    if (!this.stopped) return
    this.stopped = false
    this.replaced = false
    this.connect()
  }

  stop() {
    this.stopped = true
    this.timers.clearTimeout(this.timer)
    this.timer = null
    const ws = this.ws
    this.ws = null
    if (ws) {
      ws.onclose = ws.onmessage = ws.onopen = ws.onerror = null
      try { ws.close(1000) } catch { /* already closed */ }
    }
    this.onStatus('closed', { stopped: true })
  }

  /** Follow a job (from "0" = replay from its first event, if not seen before). */
  track(jobId, after = '0') {
    const known = this.lastIds.get(jobId)
    if (known === undefined || compareStreamIds(after, known) > 0) this.lastIds.set(jobId, after)
    if (this.ready) this.resume(jobId)
  }

  untrack(jobId) {
    this.lastIds.delete(jobId)
  }

  send(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame))
  }

  resume(jobId) {
    this.send({ type: 'resume', jobId, after: this.lastIds.get(jobId) || '0' })
  }

  connect() {
    const url = this.url()
    if (!url) {
      this.stopped = true
      return
    }
    this.ready = false
    this.onStatus('connecting', { attempt: this.attempt })
    const ws = new this.WebSocketImpl(url)
    this.ws = ws
    ws.onmessage = (message) => this.handle(message.data)
    ws.onclose = (event) => this.closed(event)
    ws.onerror = () => { /* a close follows */ }
  }

  handle(raw) {
    let event
    try {
      event = JSON.parse(raw)
    } catch {
      return
    }
    if (!event || typeof event !== 'object') return
    if (event.type === 'ready') {
      const reconnect = this.everOpened
      this.ready = true
      this.everOpened = true
      this.attempt = 0
      this.onStatus('open', { reconnect })
      for (const jobId of this.lastIds.keys()) this.resume(jobId)
      return
    }
    if (event.eventId) {
      if (this.finals.has(event.eventId)) return // a final event sent again
      this.finals.add(event.eventId)
      if (this.finals.size > FINALS_KEPT) this.finals.delete(this.finals.values().next().value)
    }
    const jobId = event.data?.jobId
    if (jobId && event.id) {
      const last = this.lastIds.get(jobId)
      if (last !== undefined && compareStreamIds(event.id, last) <= 0) return // already applied
      this.lastIds.set(jobId, event.id)
    }
    if (jobId && TERMINAL.has(event.type)) this.lastIds.delete(jobId)
    this.onEvent(event)
  }

  async closed(event) {
    this.ws = null
    this.ready = false
    if (this.stopped) return
    this.onStatus('closed', { code: event?.code })
    if (event?.code === REPLACED_CLOSE) {
      // Reconnecting would push out another of the user's tabs, which would then do the same.
      this.stopped = true
      this.replaced = true
      return
    }
    if (event?.code === UNAUTHORIZED_CLOSE) {
      const renewed = await this.onUnauthorized()
      if (!renewed || this.stopped) {
        this.stopped = true
        return
      }
    }
    const delay = backoffDelay(this.attempt, this.backoff, this.random)
    this.attempt += 1
    this.timer = this.timers.setTimeout(() => {
      this.timer = null
      if (!this.stopped) this.connect()
    }, delay)
  }
}
