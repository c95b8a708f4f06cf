import { describe, expect, it, vi } from 'vitest'
import { LiveSocket, REPLACED_CLOSE, UNAUTHORIZED_CLOSE, backoffDelay, compareStreamIds } from '../../src/live/socket.js'

class FakeSocket {
  static all = []
  constructor(url) {
    this.url = url
    this.readyState = 1
    this.sent = []
    FakeSocket.all.push(this)
  }
  send(text) { this.sent.push(JSON.parse(text)) }
  close() { this.readyState = 3 }
  serverSends(frame) { this.onmessage({ data: JSON.stringify(frame) }) }
  serverCloses(code = 1006) { this.readyState = 3; return this.onclose({ code }) }
}

function fakeTimers() {
  const pending = []
  return {
    pending,
    setTimeout: (fn, ms) => { pending.push({ fn, ms }); return pending.length },
    clearTimeout: () => {},
    runNext() { const t = pending.shift(); t.fn(); return t.ms },
  }
}

function make(extra = {}) {
  FakeSocket.all = []
  const events = []
  const statuses = []
  const timers = fakeTimers()
  const socket = new LiveSocket({ url: () => 'ws://x/ws?token=T', WebSocketImpl: FakeSocket, onEvent: (e) => events.push(e),
    onStatus: (s, info) => statuses.push([s, info]), random: () => 1, timers, ...extra })
  return { socket, events, statuses, timers }
}

describe('stream ids and back-off', () => {
  it('orders Redis stream ids numerically', () => {
    expect(compareStreamIds('1700000000000-1', '1700000000000-0')).toBe(1)
    expect(compareStreamIds('999-5', '1000-0')).toBe(-1)
    expect(compareStreamIds('0', '1-0')).toBe(-1)
  })
  it('doubles up to the ceiling', () => {
    expect([0, 1, 2, 3, 10].map((n) => backoffDelay(n, { base: 1000, max: 8000 }, () => 1))).toEqual([1000, 2000, 4000, 8000, 8000])
    expect(backoffDelay(0, { base: 1000 }, () => 0)).toBe(500)
  })
})

describe('LiveSocket', () => {
  it('resumes tracked jobs once ready and drops replayed duplicates', () => {
    const { socket, events } = make()
    socket.track('job1')
    socket.start()
    const ws = FakeSocket.all[0]
    expect(ws.sent).toEqual([])
    ws.serverSends({ type: 'ready', data: { userId: 1 } })
    expect(ws.sent).toEqual([{ type: 'resume', jobId: 'job1', after: '0' }])
    const progress = { type: 'job.progress', data: { jobId: 'job1', step: 1, totalSteps: 4, percent: 25 }, id: '100-0' }
    ws.serverSends(progress)
    ws.serverSends(progress) // the same event arriving by pub/sub and by replay
    ws.serverSends({ type: 'credits.changed', data: { available: 470, held: 0 } })
    expect(events.map((e) => e.type)).toEqual(['job.progress', 'credits.changed'])
  })

  it('reconnects with back-off and resumes after the last event seen', async () => {
    const { socket, statuses, timers } = make()
    socket.start()
    let ws = FakeSocket.all[0]
    ws.serverSends({ type: 'ready' })
    ws.serverSends({ type: 'job.queued', data: { jobId: 'j', position: 0 }, id: '5-0' })
    ws.serverSends({ type: 'job.progress', data: { jobId: 'j', step: 2, totalSteps: 8 }, id: '7-1' })
    await ws.serverCloses(1006)
    expect(timers.pending[0].ms).toBe(1000)
    timers.runNext()
    ws = FakeSocket.all[1]
    ws.serverSends({ type: 'ready' })
    expect(ws.sent).toEqual([{ type: 'resume', jobId: 'j', after: '7-1' }])
    expect(statuses.filter(([s]) => s === 'open').map(([, info]) => info.reconnect)).toEqual([false, true])
    await ws.serverCloses(1006)
    await FakeSocket.all[1] && timers.runNext()
    await FakeSocket.all[2].serverCloses(1006)
    expect(timers.pending[0].ms).toBe(2000) // attempt 1 after a failed attempt 0
  })

  it('stops following a job after its terminal event', async () => {
    const { socket, timers } = make()
    socket.start()
    let ws = FakeSocket.all[0]
    ws.serverSends({ type: 'ready' })
    ws.serverSends({ type: 'job.started', data: { jobId: 'j' }, id: '1-0' })
    ws.serverSends({ type: 'job.succeeded', data: { jobId: 'j', images: 1, charged: 15 }, id: '2-0' })
    await ws.serverCloses()
    timers.runNext()
    ws = FakeSocket.all[1]
    ws.serverSends({ type: 'ready' })
    expect(ws.sent).toEqual([])
  })

  it('applies a final event once when the server sends it twice, live or on resume', async () => {
    const { socket, events, timers } = make()
    socket.track('j')
    socket.track('k')
    socket.start()
    let ws = FakeSocket.all[0]
    ws.serverSends({ type: 'ready' })
    const succeeded = { type: 'job.succeeded', eventId: 'job.succeeded:j', data: { jobId: 'j', images: 1, charged: 15 } }
    ws.serverSends({ ...succeeded, id: '2-0', data: { ...succeeded.data, settled: false } })
    // Sent again after a crash (the reconciler's copy, settled by then): a new stream entry, the same eventId.
    ws.serverSends({ ...succeeded, id: '3-0', data: { ...succeeded.data, settled: true } })
    ws.serverSends({ type: 'job.started', data: { jobId: 'k' }, id: '4-0' })
    await ws.serverCloses()
    timers.runNext()
    ws = FakeSocket.all[1]
    ws.serverSends({ type: 'ready' })
    expect(ws.sent).toEqual([{ type: 'resume', jobId: 'k', after: '4-0' }])
    const failed = { type: 'job.failed', eventId: 'job.failed:k', data: { jobId: 'k', errorCode: 'WORKER_LOST' } }
    ws.serverSends({ ...failed, id: '5-0' })
    ws.serverSends({ ...failed, id: '6-0' })
    expect(events.map((e) => [e.type, e.data.jobId])).toEqual([
      ['job.succeeded', 'j'], ['job.started', 'k'], ['job.failed', 'k']])
    expect(events[0].data.settled).toBe(false)
  })

  it('does not reconnect after stop()', async () => {
    const { socket, timers } = make()
    socket.start()
    const ws = FakeSocket.all[0]
    socket.stop()
    expect(ws.readyState).toBe(3)
    expect(timers.pending).toHaveLength(0)
  })

  it('asks for a new token on an unauthorized close and gives up without one', async () => {
    const onUnauthorized = vi.fn(async () => false)
    const { socket, timers } = make({ onUnauthorized })
    socket.start()
    await FakeSocket.all[0].serverCloses(UNAUTHORIZED_CLOSE)
    expect(onUnauthorized).toHaveBeenCalledTimes(1)
    expect(timers.pending).toHaveLength(0)

    const renewed = make({ onUnauthorized: async () => true })
    renewed.socket.start()
    await FakeSocket.all[0].serverCloses(UNAUTHORIZED_CLOSE)
    expect(renewed.timers.pending).toHaveLength(1)
  })

  it('gives way without reconnecting when newer tabs replaced it, until started again', async () => {
    const { socket, timers, statuses } = make()
    socket.start()
    FakeSocket.all[0].serverSends({ type: 'ready' })
    await FakeSocket.all[0].serverCloses(REPLACED_CLOSE)
    expect(timers.pending).toHaveLength(0)
    expect(socket.replaced).toBe(true)
    expect(statuses.at(-1)).toEqual(['closed', { code: REPLACED_CLOSE }])
    socket.start()
    expect(FakeSocket.all).toHaveLength(2)
    expect(socket.replaced).toBe(false)
  })
})
