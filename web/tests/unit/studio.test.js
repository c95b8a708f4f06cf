import { describe, expect, it } from 'vitest'
import { ASPECTS, aspectOf, generateBody, recommendedFor, reuseValues, sizeForAspect, withPreset } from '../../src/lib/create.js'
import { jobErrorKind, scrubDetail } from '../../src/lib/errors.js'
import { defaultOption, modelLabel, optionsFor, prettyFileName } from '../../src/lib/catalog.js'
import { acceptedValue, valuesFor } from '../../src/lib/drafts.js'
import { aspectRatio } from '../../src/lib/works.js'

const aspect = (key) => ASPECTS.find((a) => a.key === key)

describe('aspect-ratio sizes', () => {
  it('keeps SD 1.5 native short side, like the original 512×768 / 768×512', () => {
    expect(sizeForAspect(aspect('1:1'), { base: 512 })).toEqual({ width: 512, height: 512 })
    expect(sizeForAspect(aspect('2:3'), { base: 512 })).toEqual({ width: 512, height: 768 })
    expect(sizeForAspect(aspect('3:2'), { base: 512 })).toEqual({ width: 768, height: 512 })
    expect(sizeForAspect(aspect('9:16'), { base: 512 })).toEqual({ width: 512, height: 896 })
  })
  it('keeps the native area of 1024 models (SDXL buckets) within the pixel limit', () => {
    expect(sizeForAspect(aspect('16:9'), { base: 1024 })).toEqual({ width: 1344, height: 768 })
    const tall = sizeForAspect(aspect('9:16'), { base: 1024, maxPixels: 1024 * 1024 })
    expect(tall.width * tall.height).toBeLessThanOrEqual(1024 * 1024)
    expect(tall.height).toBeGreaterThan(tall.width)
  })
  it('names the aspect of a size, or custom', () => {
    expect(aspectOf(512, 768, { base: 512 })).toBe('2:3')
    expect(aspectOf(640, 512, { base: 512 })).toBe('custom')
  })
  it('gives the box ratio of a work or output, 1 when unknown', () => {
    expect(aspectRatio({ width: 512, height: 768 })).toBeCloseTo(2 / 3)
    expect(aspectRatio({ params: { width: 768, height: 512 } })).toBeCloseTo(1.5)
    expect(aspectRatio({})).toBe(1)
  })
})

describe('request body and reuse', () => {
  it('sends every declared parameter, including ones this client has never heard of', () => {
    const workflow = { name: 'text2img_lora', parameters: [{ name: 'prompt' }, { name: 'lora', from: 'loras' }, { name: 'loraStrength', type: 'float' }, { name: 'sourceImage', type: 'image' }] }
    expect(generateBody({ prompt: ' cat ', lora: 'style.safetensors', loraStrength: 0.8, sourceImage: null, steps: 20 }, workflow))
      .toEqual({ workflow: 'text2img_lora', prompt: 'cat', lora: 'style.safetensors', loraStrength: 0.8 })
  })
  it('reuses all settings with the seed locked, only the prompt, only the seed, or a new seed', () => {
    const params = { prompt: 'fox', negativePrompt: 'blurry', steps: 12, seed: 42, width: 512, height: 768 }
    expect(reuseValues(params, 'all')).toEqual({ ...params, seedLocked: true })
    expect(reuseValues(params, 'prompt')).toEqual({ prompt: 'fox', negativePrompt: 'blurry' })
    expect(reuseValues(params, 'seed')).toEqual({ seed: 42, seedLocked: true })
    expect(reuseValues(params, 'vary')).toMatchObject({ steps: 12, seed: -1, seedLocked: false })
  })
  it('adds a preset once', () => {
    const preset = { text: 'anime style' }
    expect(withPreset('', preset)).toBe('anime style')
    expect(withPreset('a cat', preset)).toBe('a cat, anime style')
    expect(withPreset('a cat, anime style', preset)).toBe('a cat, anime style')
  })
})

describe('remembered settings', () => {
  const catalog = { models: [{ name: 'a.safetensors', kind: 'checkpoints' }, { name: 'ae.safetensors', kind: 'vaes' }, { name: 'taesd', kind: 'vaes' }], samplers: ['euler'] }
  it('keeps a stored value the parameter accepts and falls back to the default otherwise', () => {
    const steps = { name: 'steps', type: 'int', min: 1, max: 100, default: 20 }
    expect(acceptedValue(steps, 30, catalog)).toBe(30)
    expect(acceptedValue(steps, 300, catalog)).toBe(20)
    expect(acceptedValue(steps, 2.5, catalog)).toBe(20)
    expect(acceptedValue({ name: 'scale', type: 'int', choices: [2, 4], default: 2 }, 3, catalog)).toBe(2)
    expect(acceptedValue({ name: 'model', type: 'string', from: 'checkpoints' }, 'gone.safetensors', catalog)).toBe('a.safetensors')
  })
  it('defaults a catalog pick to the option matching the template', () => {
    const vae = { name: 'vae', type: 'string', from: 'vaes', match: '^ae' }
    expect(defaultOption(vae, optionsFor(vae, catalog))).toBe('ae.safetensors')
    expect(valuesFor({ parameters: [vae, { name: 'sourceImage', type: 'image' }] }, {}, catalog)).toEqual({ vae: 'ae.safetensors' })
  })
})

describe('recommended settings', () => {
  const catalog = { models: [{ name: 'a.safetensors', kind: 'checkpoints' }], samplers: ['euler', 'dpmpp_2m'], schedulers: ['normal'] }
  const workflow = { parameters: [
    { name: 'steps', type: 'int', min: 1, max: 100, default: 20 },
    { name: 'cfgScale', type: 'float', min: 1, max: 30, default: 7 },
    { name: 'sampler', type: 'string', from: 'samplers' },
    { name: 'width', type: 'int', min: 64, max: 2048, multipleOf: 8, default: 512 },
  ] }
  it('keeps what the workflow declares and accepts', () => {
    const model = { recommended: { steps: 28, cfgScale: 6.5, sampler: 'dpmpp_2m', width: 768, guidance: 3 } }
    expect(recommendedFor(model, workflow, catalog)).toEqual({ steps: 28, cfgScale: 6.5, sampler: 'dpmpp_2m', width: 768 })
  })
  it('drops values the form would refuse', () => {
    const model = { recommended: { steps: 500, sampler: 'gone', width: 770 } }
    expect(recommendedFor(model, workflow, catalog)).toEqual({})
    expect(recommendedFor({}, workflow, catalog)).toEqual({})
  })
})

describe('error copy', () => {
  it('tells a GPU out-of-memory failure from other failures', () => {
    expect(jobErrorKind({ code: 'EXECUTION_ERROR', message: 'CUDA out of memory (node KSampler)' })).toBe('oom')
    expect(jobErrorKind({ code: 'EXECUTION_ERROR', message: 'bad tensor' })).toBe('execution')
    expect(jobErrorKind({ code: 'COMFYUI_UNAVAILABLE', message: '' })).toBe('busy')
    expect(jobErrorKind({ code: 'OUTPUT_FLAGGED', message: '1 of 1 images were withheld' })).toBe('flagged')
    expect(jobErrorKind({ code: 'OUTPUT_CHECK_UNAVAILABLE' })).toBe('checkUnavailable')
    expect(jobErrorKind({ code: 'SOMETHING_NEW' })).toBe('unknown')
  })
  it('never shows an internal address', () => {
    const text = scrubDetail('ComfyUI at http://127.0.0.1:8488 did not answer GET /object_info (ReadTimeout); 10.0.0.7:8188, localhost:9000', '[x]')
    expect(text).not.toMatch(/127\.0\.0\.1|10\.0\.0\.7|localhost|http/)
    expect(text).toContain('ReadTimeout')
  })
})

describe('names people read', () => {
  it('prefers the registry name, else makes the file name readable', () => {
    expect(prettyFileName('sd15_demo.safetensors')).toBe('SD15 Demo')
    expect(modelLabel({ name: 'x.safetensors', displayNames: { zh: '写实', en: 'Realistic' } }, 'en')).toBe('Realistic')
    expect(modelLabel({ name: 'dreamshaper_8.safetensors' }, 'zh')).toBe('Dreamshaper 8')
  })
})
