import { defineStore } from 'pinia'
import { reactive, ref } from 'vue'
import { http, renderApi } from '@/api'
import { session } from '@/api/session'
import { LiveSocket } from '@/live/socket'
import { ACTIVE, applyJobEvent, emptyJob, jobFromApi } from '@/lib/jobs'
import { useAuthStore } from './auth'
import { useNotificationStore } from './notifications'

function socketUrl() {
  const token = session.access()
  if (!token) return null
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws'
  return `${scheme}://${window.location.host}/ws?token=${encodeURIComponent(token)}`
}

export const useLiveStore = defineStore('live', () => {
  const status = ref('closed') // connecting | open | closed
  const jobs = reactive({}) // id -> job
  const finished = ref(0) // bumps when any job ends, so lists reload
  let socket = null

  function upsert(apiJob) {
    const existing = jobs[apiJob.id]
    const fresh = jobFromApi(apiJob)
    if (existing) {
      // Keep what events taught us (samples, preview, step) when the API row is older.
      if (ACTIVE.has(existing.status) || !ACTIVE.has(fresh.status)) {
        Object.assign(existing, { ...fresh, samples: existing.samples, preview: existing.preview,
          step: existing.step ?? fresh.step, totalSteps: existing.totalSteps ?? fresh.totalSteps,
          position: existing.position ?? fresh.position, percent: Math.max(existing.percent, fresh.percent),
          outputs: fresh.outputs.length >= existing.outputs.length ? fresh.outputs : existing.outputs,
          charged: existing.charged ?? fresh.charged, refunded: existing.refunded ?? fresh.refunded,
          status: ACTIVE.has(fresh.status) && !ACTIVE.has(existing.status) ? existing.status : fresh.status })
      }
      return existing
    }
    jobs[apiJob.id] = fresh
    return jobs[apiJob.id]
  }

  function follow(apiJob, position) {
    const job = upsert(apiJob)
    if (position !== undefined && position !== null && job.status === 'queued') job.position = position
    if (ACTIVE.has(job.status)) socket?.track(job.id)
    return job
  }

  async function loadActive() {
    const lists = await Promise.allSettled([
      renderApi.jobs({ status: 'running', pageSize: 50 }),
      renderApi.jobs({ status: 'queued', pageSize: 50 }),
    ])
    for (const result of lists) {
      if (result.status === 'fulfilled') result.value.items.forEach((item) => follow(item))
    }
  }

  async function onEvent(event) {
    const auth = useAuthStore()
    if (event.type === 'credits.changed') {
      auth.setCredits(event.data)
      return
    }
    if (event.type === 'notification.created') {
      useNotificationStore().pushed(event.data)
      return
    }
    const jobId = event.data?.jobId
    if (!jobId || !event.type.startsWith('job.')) return
    let job = jobs[jobId]
    if (!job) {
      jobs[jobId] = emptyJob(jobId)
      job = jobs[jobId]
      renderApi.job(jobId).then(upsert).catch(() => {})
    }
    const wasActive = ACTIVE.has(job.status)
    applyJobEvent(job, event)
    if (wasActive && !ACTIVE.has(job.status)) {
      finished.value += 1
      // The final row has every output and the exact cost.
      renderApi.job(jobId).then(upsert).catch(() => {})
    }
  }

  function start() {
    if (socket) return
    socket = new LiveSocket({
      url: socketUrl,
      WebSocketImpl: window.WebSocket,
      onEvent,
      onStatus: (next, info) => {
        status.value = next
        if (next === 'open') {
          loadActive()
          if (info?.reconnect) {
            useAuthStore().refreshCredits()
            useNotificationStore().refresh()
          }
        }
      },
      onUnauthorized: () => http.refresh(),
    })
    socket.start()
  }

  // A tab whose socket gave way to newer tabs takes live events back when the user returns to it.
  if (typeof document !== 'undefined') {
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && socket?.replaced) socket.start()
    })
  }

  function stop() {
    socket?.stop()
    socket = null
    status.value = 'closed'
    for (const id of Object.keys(jobs)) delete jobs[id]
  }

  return { status, jobs, finished, start, stop, follow, upsert, loadActive }
})
