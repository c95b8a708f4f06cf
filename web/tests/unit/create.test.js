import { describe, expect, it } from 'vitest'
import { blockReason, cfgLabelKey, generateBody, jobCost, stepsLabelKey } from '../../src/lib/create.js'

const form = { prompt: 'a fox', negativePrompt: '', model: 'm.safetensors', width: 512, height: 512, batchSize: 2, steps: 20,
  cfgScale: 7, seed: -1, sampler: 'euler', scheduler: 'normal', sourceImage: null }
const ctx = { signedIn: true, submitting: false, catalogLoaded: true, balance: 500, pricePerImage: 15, batchSize: 2 }

describe('cost and the disabled reason', () => {
  it('costs price × images, clamped to 1–4 images', () => {
    expect(jobCost(15, 2)).toBe(30)
    expect(jobCost(15, 9)).toBe(60)
    expect(jobCost(15, 0)).toBe(15)
  })
  it('allows a complete form with enough credits', () => {
    expect(blockReason(form, ctx)).toBeNull()
  })
  it('names the first thing missing', () => {
    expect(blockReason(form, { ...ctx, signedIn: false })).toBe('create.reasons.signIn')
    expect(blockReason({ ...form, prompt: '   ' }, ctx)).toBe('create.reasons.prompt')
    expect(blockReason({ ...form, model: '' }, ctx)).toBe('create.reasons.model')
    expect(blockReason({ ...form, width: 500 }, ctx)).toBe('create.reasons.size')
    expect(blockReason(form, { ...ctx, needsSource: true })).toBe('create.reasons.source')
    expect(blockReason(form, { ...ctx, balance: null })).toBe('create.reasons.loading')
  })
  it('blocks when the balance is short, exactly at the boundary', () => {
    expect(blockReason(form, { ...ctx, balance: 30 })).toBeNull()
    expect(blockReason(form, { ...ctx, balance: 29 })).toBe('create.reasons.credits')
  })
  it('sends only the parameters the workflow declares', () => {
    const workflow = { name: 'text2img', parameters: ['prompt', 'negativePrompt', 'model', 'width', 'height', 'batchSize', 'steps', 'cfgScale', 'seed', 'sampler', 'scheduler'].map((name) => ({ name })) }
    const body = generateBody({ ...form, prompt: '  a fox  ', denoise: 0.5 }, workflow)
    expect(body).toEqual({ workflow: 'text2img', prompt: 'a fox', model: 'm.safetensors', width: 512, height: 512, batchSize: 2,
      steps: 20, cfgScale: 7, seed: -1, sampler: 'euler', scheduler: 'normal' })
  })
  it('names the source image by its reference (upload:, output:, work:)', () => {
    const workflow = { name: 'img2img', parameters: [{ name: 'prompt' }, { name: 'sourceImage' }] }
    const body = generateBody({ ...form, sourceImage: { id: 'abc', ref: 'upload:abc', url: '/x' } }, workflow)
    expect(body).toEqual({ workflow: 'img2img', prompt: 'a fox', sourceImage: 'upload:abc' })
  })
  it('labels cfg and steps like the original', () => {
    expect([3, 7.5, 12, 18].map(cfgLabelKey)).toEqual(['create.cfgLabels.conservative', 'create.cfgLabels.balanced', 'create.cfgLabels.bold', 'create.cfgLabels.wild'])
    expect([20, 30, 40].map(stepsLabelKey)).toEqual(['create.stepsLabels.fast', 'create.stepsLabels.standard', 'create.stepsLabels.high'])
  })
})
