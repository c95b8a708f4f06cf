import { describe, expect, it } from 'vitest'
import { applyJobEvent, emptyJob, estimateRemaining, jobFromApi, labelledDownloadUrl, TIMING_STEPS, timingSteps } from '../../src/lib/jobs.js'
import { dailySpending, spentBy } from '../../src/lib/credits.js'

describe('job events', () => {
  it('advances a job from queued to succeeded with its images', () => {
    const job = emptyJob('j')
    applyJobEvent(job, { type: 'job.queued', data: { jobId: 'j', position: 2 }, ts: 1 })
    expect(job.position).toBe(2)
    applyJobEvent(job, { type: 'job.started', data: { jobId: 'j' }, ts: 2 })
    applyJobEvent(job, { type: 'job.progress', data: { jobId: 'j', step: 4, totalSteps: 8, percent: 50 }, ts: 3 })
    expect(job).toMatchObject({ status: 'running', step: 4, totalSteps: 8, percent: 50, position: null })
    const image = { type: 'job.image', data: { jobId: 'j', outputId: 'o1', index: 0, imageUrl: '/media/a.png', thumbnailUrl: '/media/a.webp', width: 512, height: 512 } }
    applyJobEvent(job, image)
    applyJobEvent(job, image)
    expect(job.outputs).toHaveLength(1)
    applyJobEvent(job, { type: 'job.succeeded', data: { jobId: 'j', images: 1, charged: 15 }, ts: 5 })
    expect(job).toMatchObject({ status: 'succeeded', percent: 100, charged: 15 })
  })
  it('records failures and refunds', () => {
    const job = jobFromApi({ id: 'j', status: 'running', outputs: [] })
    applyJobEvent(job, { type: 'job.failed', data: { jobId: 'j', errorCode: 'COMFYUI_ERROR', errorClass: 'permanent', message: 'boom', refunded: 30 } })
    expect(job).toMatchObject({ status: 'failed', refunded: 30, error: { code: 'COMFYUI_ERROR', message: 'boom' } })
  })
  it('derives the refund of a cancelled job from the API row (held minus captured)', () => {
    const job = jobFromApi({ id: 'j', status: 'cancelled', pricePerImage: 15, imagesRequested: 2, cost: 15, outputs: [] })
    expect(job.refunded).toBe(15)
    expect(jobFromApi({ id: 'j', status: 'succeeded', pricePerImage: 15, imagesRequested: 2, cost: 30 })).toMatchObject({ charged: 30, refunded: null })
  })
  it('takes the queue position from the API and from job.position updates', () => {
    const job = jobFromApi({ id: 'j', status: 'queued', queuePosition: 3, outputs: [] })
    expect(job.position).toBe(3)
    applyJobEvent(job, { type: 'job.position', data: { jobId: 'j', position: 1, estimatedStartSeconds: 4 } })
    expect(job.position).toBe(1)
  })
  it('estimates the time left from real progress only', () => {
    const job = emptyJob('j')
    applyJobEvent(job, { type: 'job.progress', data: { jobId: 'j', step: 1, totalSteps: 10, percent: 10 }, ts: 100 })
    expect(estimateRemaining(job)).toBeNull()
    applyJobEvent(job, { type: 'job.progress', data: { jobId: 'j', step: 3, totalSteps: 10, percent: 30 }, ts: 104 })
    expect(estimateRemaining(job)).toBe(14)
  })
})

describe('credit spending', () => {
  it('counts captures and admin deductions, not holds', () => {
    expect(spentBy({ type: 'hold', amount: -30, heldChange: 30 })).toBe(0)
    expect(spentBy({ type: 'capture', amount: 0, heldChange: -15 })).toBe(15)
    expect(spentBy({ type: 'admin_deduct', amount: -50, heldChange: 0 })).toBe(50)
  })
  it('buckets by local day', () => {
    const now = new Date('2024-03-05T12:00:00Z')
    const data = dailySpending([
      { type: 'capture', heldChange: -15, createdAt: '2024-03-05T01:00:00Z' },
      { type: 'capture', heldChange: -15, createdAt: '2024-03-05T02:00:00Z' },
      { type: 'capture', heldChange: -15, createdAt: '2024-03-04T23:00:00Z' },
      { type: 'capture', heldChange: -15, createdAt: '2024-01-01T00:00:00Z' },
    ], 3, now, 'UTC')
    expect(data).toEqual([{ day: '2024-03-03', spent: 0 }, { day: '2024-03-04', spent: 15 }, { day: '2024-03-05', spent: 30 }])
  })
})

describe('timing breakdown', () => {
  it('gives each step the seconds since the step before that happened', () => {
    const steps = timingSteps({ queuedAt: '2026-01-01T00:00:00.000Z', pickedAt: '2026-01-01T00:00:02.500Z',
      submittedAt: '2026-01-01T00:00:03.000Z', firstProgressAt: null, lastImageAt: '2026-01-01T00:00:13.000Z',
      finishedAt: '2026-01-01T00:00:13.200Z', settledAt: '2026-01-01T00:00:13.500Z' })
    expect(steps.map((s) => s.key)).toEqual(TIMING_STEPS)
    expect(steps[0].seconds).toBeNull()
    expect(steps[1].seconds).toBe(2.5)
    expect(steps[3]).toMatchObject({ at: null, seconds: null })
    expect(steps[4].seconds).toBe(10)
    expect(steps[6].seconds).toBeCloseTo(0.3)
  })
  it('shows nothing for a job without timings', () => {
    expect(timingSteps(undefined).every((s) => s.at === null && s.seconds === null)).toBe(true)
  })
})

describe('labelledDownloadUrl', () => {
  it('asks the gateway for the labelled download, keeping the signature', () => {
    expect(labelledDownloadUrl('/media/images/ab/cd/x.png?exp=1&sig=2')).toBe('/media/images/ab/cd/x.png?exp=1&sig=2&download=1')
    expect(labelledDownloadUrl('/media/works/images/ab/cd/x.png')).toBe('/media/works/images/ab/cd/x.png?download=1')
    expect(labelledDownloadUrl(undefined)).toBe(undefined)
  })
})
