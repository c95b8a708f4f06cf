/**
 * What a failure means to a creator: a localised title and what to try, keyed by the
 * server's error code. The server's own message is technical detail, shown folded away and
 * never with an internal address in it.
 */

const JOB_KINDS = {
  COMFYUI_UNAVAILABLE: 'busy', COMFYUI_CONNECTION_LOST: 'busy', COMFYUI_BAD_RESPONSE: 'busy', HISTORY_UNREADABLE: 'busy',
  PROMPT_LOST: 'busy', INTERNAL_ERROR: 'busy', OUTPUT_MISSING: 'busy', OUTPUT_UNREADABLE: 'busy', GALLERY_UNAVAILABLE: 'busy',
  EXECUTION_ERROR: 'execution', PROMPT_REJECTED: 'rejected', DEADLINE_EXCEEDED: 'timeout', PARTIAL_OUTPUT: 'partial',
  NO_OUTPUT: 'noOutput', INTERRUPTED: 'interrupted', INTERRUPT_TIMEOUT: 'interrupted', SOURCE_NOT_FOUND: 'source',
  OUTPUT_FLAGGED: 'flagged', OUTPUT_CHECK_UNAVAILABLE: 'checkUnavailable',
}

const OUT_OF_MEMORY = /out of memory|OOM\b|CUDA error/i

/** The kind of a job failure ('oom', 'busy', 'execution', …, or 'unknown'), from its code and message. */
export function jobErrorKind(error) {
  if (!error) return 'unknown'
  if (OUT_OF_MEMORY.test(error.message || '')) return 'oom'
  return JOB_KINDS[error.code] || 'unknown'
}

/** A technical message without URLs, host:port pairs or file paths of the platform's machines. */
export function scrubDetail(message, placeholder = '…') {
  return String(message || '')
    .replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s)'"]+/gi, placeholder)
    .replace(/\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b/g, placeholder)
    .replace(/\blocalhost(?::\d+)?\b/gi, placeholder)
    .replace(/(?:\/[\w.-]+){2,}/g, placeholder)
    .trim()
}

/**
 * { title, hint, refund, detail } for a failed job, in the UI's language.
 * refunded: credits given back (null when not known yet).
 */
export function jobErrorCopy(t, error, refunded) {
  const kind = jobErrorKind(error)
  let refund = ''
  if (typeof refunded === 'number') refund = refunded > 0 ? t('errors.refunded', { n: refunded }, refunded) : t('errors.notCharged')
  return {
    kind,
    title: t(`errors.job.${kind}.title`),
    hint: t(`errors.job.${kind}.hint`),
    refund,
    detail: scrubDetail(error?.message, t('errors.internalAddress')),
    code: error?.code || '',
  }
}
