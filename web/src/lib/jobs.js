/** A render job as the client follows it: built from the API, advanced by live events. */

export const ACTIVE = new Set(['queued', 'running'])

/** Credits given back for a job that ended short (what was held minus what was captured). */
function refundOf(api) {
  if (!['failed', 'cancelled'].includes(api.status)) return null
  if (typeof api.pricePerImage !== 'number' || typeof api.imagesRequested !== 'number') return null
  return Math.max(0, api.pricePerImage * api.imagesRequested - (api.cost || 0))
}

export function jobFromApi(api) {
  return {
    id: api.id,
    workflow: api.workflow,
    params: api.params || {},
    status: api.status,
    percent: typeof api.progress === 'number' ? api.progress : 0,
    step: null,
    totalSteps: null,
    position: api.queuePosition ?? null,
    preview: null,
    pricePerImage: api.pricePerImage,
    imagesRequested: api.imagesRequested,
    imagesDelivered: api.imagesDelivered,
    cost: api.cost,
    charged: api.status === 'succeeded' && typeof api.cost === 'number' ? api.cost : null,
    refunded: refundOf(api),
    error: api.error || null,
    outputs: [...(api.outputs || [])].sort((a, b) => a.index - b.index),
    expiresAt: api.expiresAt ?? null, // when the unsaved outputs are removed
    createdAt: api.createdAt,
    startedAt: api.startedAt,
    finishedAt: api.finishedAt,
    samples: [],
  }
}

export function emptyJob(id) {
  return jobFromApi({ id, status: 'queued', outputs: [] })
}

/** Apply one server event to a job (mutates and returns it). */
export function applyJobEvent(job, event) {
  const data = event.data || {}
  const ts = typeof event.ts === 'number' ? event.ts : Date.now() / 1000
  switch (event.type) {
    case 'job.queued':
    case 'job.position':
      if (job.status === 'queued') job.position = data.position ?? job.position
      break
    case 'job.started':
      if (job.status === 'queued') job.status = 'running'
      job.position = null
      job.startedAt = job.startedAt || new Date(ts * 1000).toISOString()
      break
    case 'job.progress':
      if (job.status === 'queued') job.status = 'running'
      job.position = null
      job.step = data.step
      job.totalSteps = data.totalSteps
      job.percent = data.percent ?? (data.totalSteps ? Math.round((100 * data.step) / data.totalSteps) : job.percent)
      job.samples.push({ ts, percent: job.percent })
      if (job.samples.length > 50) job.samples.shift()
      break
    case 'job.preview':
      job.preview = data.image
      break
    case 'job.image':
      if (!job.outputs.some((o) => o.id === data.outputId)) {
        job.outputs.push({ id: data.outputId, index: data.index, imageUrl: data.imageUrl,
          thumbnailUrl: data.thumbnailUrl, width: data.width, height: data.height })
        job.outputs.sort((a, b) => a.index - b.index)
      }
      job.imagesDelivered = job.outputs.length
      break
    case 'job.succeeded':
      job.status = 'succeeded'
      job.percent = 100
      job.charged = data.charged ?? null
      job.preview = null
      job.finishedAt = job.finishedAt || new Date(ts * 1000).toISOString()
      break
    case 'job.failed':
      job.status = 'failed'
      job.error = { code: data.errorCode, class: data.errorClass, message: data.message }
      job.refunded = data.refunded ?? null
      job.preview = null
      job.finishedAt = job.finishedAt || new Date(ts * 1000).toISOString()
      break
    case 'job.cancelled':
      job.status = 'cancelled'
      job.refunded = data.refunded ?? null
      job.preview = null
      job.finishedAt = job.finishedAt || new Date(ts * 1000).toISOString()
      break
    default:
      break
  }
  return job
}

/** Seconds left, from the observed rate of progress; null until there are two samples. */
export function estimateRemaining(job) {
  const samples = job.samples || []
  if (job.status !== 'running' || samples.length < 2) return null
  // Only the current run of increasing percentages (a new image in a batch may restart it).
  let start = samples.length - 1
  while (start > 0 && samples[start - 1].percent <= samples[start].percent) start -= 1
  const first = samples[start]
  const last = samples[samples.length - 1]
  const dp = last.percent - first.percent
  const dt = last.ts - first.ts
  if (dp <= 0 || dt <= 0) return null
  return Math.max(0, Math.round(((100 - last.percent) * dt) / dp))
}

/** The steps of a job's timing breakdown (the admin job view), in order: queued → picked →
 * submitted → first progress → last image → finished → settled. Each step carries its time
 * and the seconds since the step before it that happened (null when it did not happen). */
export const TIMING_STEPS = ['queuedAt', 'pickedAt', 'submittedAt', 'firstProgressAt', 'lastImageAt', 'finishedAt', 'settledAt']

export function timingSteps(timings) {
  let previous = null
  return TIMING_STEPS.map((key) => {
    const at = timings?.[key] || null
    const ms = at ? Date.parse(at) : null
    const seconds = ms !== null && previous !== null ? Math.max(0, (ms - previous) / 1000) : null
    if (ms !== null) previous = ms
    return { key, at, seconds }
  })
}

/** The "download original" address of an output: the gateway draws the visible AI-content label on it. */
export function labelledDownloadUrl(imageUrl) {
  if (!imageUrl) return imageUrl
  return imageUrl + (imageUrl.includes('?') ? '&' : '?') + 'download=1'
}
