/** Every call the client makes, named after what it does. */
import { createHttp } from './http'
import { session } from './session'
import { currentLocale } from '@/i18n'

const logoutHandlers = new Set()
export const onSessionLost = (fn) => logoutHandlers.add(fn)

export const http = createHttp({
  session,
  language: currentLocale,
  onLogout: (error) => logoutHandlers.forEach((fn) => fn(error)),
})

const enc = encodeURIComponent

function newIdempotencyKey() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID()
  return `${Date.now()}-${Math.random().toString(36).slice(2)}`
}

export const authApi = {
  register: (body) => http.post('/api/users/register', body, { auth: false }),
  login: (body) => http.post('/api/users/login', body, { auth: false }),
  logout: () => http.post('/api/users/logout', {}),
  forgot: (email) => http.post('/api/users/password/forgot', { email }, { auth: false }),
  reset: (token, newPassword) => http.post('/api/users/password/reset', { token, newPassword }, { auth: false }),
  profile: () => http.get('/api/users/profile'),
  updateProfile: (body) => http.put('/api/users/profile', body),
  // An account made by single sign-on sets its first password without a current one.
  changePassword: (currentPassword, newPassword) =>
    http.put('/api/users/password', currentPassword ? { currentPassword, newPassword } : { newPassword }),
  uploadAvatar: (file) => {
    const form = new FormData()
    form.append('avatar', file)
    return http.upload('/api/users/avatar', form)
  },
  deleteAccount: (password) => http.del('/api/users/me', { body: { password } }),
  exportData: () => http.blob('/api/users/me/export'),
  publicProfile: (username) => http.get(`/api/users/${enc(username)}/public`, { auth: !!session.access() }),
}

export const ssoApi = {
  providers: () => http.get('/api/auth/providers', { auth: false }),
  start: (provider, body) => http.post(`/api/auth/sso/${enc(provider)}/start`, body, { auth: body.intent === 'link' }),
  exchange: (ticket, binding) => http.post('/api/auth/sso/exchange', { ticket, binding }, { auth: false }),
  register: (ticket, binding, username) => http.post('/api/auth/sso/register', { ticket, binding, username }, { auth: false }),
  link: (ticket, binding) => http.post('/api/auth/sso/link', { ticket, binding }),
  identities: () => http.get('/api/users/me/identities'),
  unlink: (id) => http.del(`/api/users/me/identities/${enc(id)}`),
}

export const creditsApi = {
  balance: () => http.get('/api/users/credits'),
  stats: () => http.get('/api/users/credits/stats'),
  transactions: (query) => http.get('/api/users/credits/transactions', { query }),
  redeem: (code) => http.post('/api/users/credits/redeem', { code }),
  pricing: () => http.get('/api/credits/pricing', { auth: false }),
}

export const renderApi = {
  catalog: () => http.get('/api/models'),
  health: () => http.get('/api/health', { auth: false }),
  generate: (params, key = newIdempotencyKey()) =>
    http.post('/api/generate', params, { headers: { 'Idempotency-Key': key } }),
  jobs: (query) => http.get('/api/jobs', { query }),
  allJobs: (query) => http.get('/api/admin/jobs', { query }),
  workers: () => http.get('/api/admin/workers'),
  drainWorker: (name) => http.post(`/api/admin/workers/${enc(name)}/drain`, {}),
  resumeWorker: (name) => http.post(`/api/admin/workers/${enc(name)}/resume`, {}),
  shares: () => http.get('/api/admin/render/shares'),
  setShare: (userId, weight) => http.put(`/api/admin/render/shares/${enc(userId)}`, { weight }),
  job: (id) => http.get(`/api/jobs/${enc(id)}`),
  cancel: (id) => http.del(`/api/jobs/${enc(id)}`),
  retry: (id) => http.post(`/api/jobs/${enc(id)}/retry`, {}, { headers: { 'Idempotency-Key': newIdempotencyKey() } }),
  upload: (file) => {
    const form = new FormData()
    form.append('image', file)
    return http.upload('/api/uploads', form)
  },
}

export const worksApi = {
  save: (body) => http.post('/api/works/save', body),
  gallery: (query) => http.get('/api/works/gallery', { query, auth: !!session.access() }),
  mine: (query) => http.get('/api/works/my', { query }),
  get: (id) => http.get(`/api/works/${enc(id)}`, { auth: !!session.access() }),
  update: (id, body) => http.put(`/api/works/${enc(id)}`, body),
  remove: (id) => http.del(`/api/works/${enc(id)}`),
  like: (id) => http.put(`/api/works/${enc(id)}/like`, {}),
  unlike: (id) => http.del(`/api/works/${enc(id)}/like`),
  view: (id) => http.post(`/api/works/${enc(id)}/view`, {}, { auth: !!session.access() }),
  download: (id) => http.blob(`/api/works/${enc(id)}/download`, { auth: !!session.access() }),
  report: (id, reason) => http.post(`/api/works/${enc(id)}/report`, { reason }),
  stats: () => http.get('/api/works/stats'),
  batch: (ids, action, tags) => http.post('/api/works/batch', { ids, action, ...(tags ? { tags } : {}) }),
}

export const notificationsApi = {
  list: (query) => http.get('/api/notifications', { query }),
  unreadCount: () => http.get('/api/notifications/unread-count'),
  read: (id) => http.post(`/api/notifications/${enc(id)}/read`, {}),
  readAll: () => http.post('/api/notifications/read-all', {}),
  remove: (id) => http.del(`/api/notifications/${enc(id)}`),
}

export const adminApi = {
  users: (query) => http.get('/api/admin/users', { query }),
  disable: (id) => http.post(`/api/admin/users/${id}/disable`, {}),
  enable: (id) => http.post(`/api/admin/users/${id}/enable`, {}),
  setRole: (id, role) => http.put(`/api/admin/users/${id}/role`, { role }),
  identities: (id) => http.get(`/api/admin/users/${id}/identities`),
  providers: () => http.get('/api/admin/auth/providers'),
  switchProvider: (key, enabled) => http.put(`/api/admin/auth/providers/${enc(key)}`, { enabled }),
  grant: (userId, amount, reason, idempotencyKey) => http.post('/api/admin/credits/grant', { userId, amount, reason, idempotencyKey }),
  deduct: (userId, amount, reason, idempotencyKey) => http.post('/api/admin/credits/deduct', { userId, amount, reason, idempotencyKey }),
  reports: (query) => http.get('/api/admin/works/reports', { query }),
  hideWork: (id, reason) => http.post(`/api/admin/works/${id}/hide`, { reason }),
  restoreWork: (id) => http.post(`/api/admin/works/${id}/restore`, {}),
  featureWork: (id) => http.put(`/api/admin/works/${id}/feature`, {}),
  unfeatureWork: (id) => http.del(`/api/admin/works/${id}/feature`),
  resolveReport: (id) => http.post(`/api/admin/works/reports/${id}/resolve`, {}),
  works: (query) => http.get('/api/admin/works', { query }),
  cancelJob: (id) => http.del(`/api/admin/jobs/${enc(id)}`),
  codes: (query) => http.get('/api/admin/credits/redeem-codes', { query }),
  createCodes: (body) => http.post('/api/admin/credits/redeem-codes', body),
  redemptions: (code, query) => http.get(`/api/admin/credits/redeem-codes/${enc(code)}/redemptions`, { query }),
  models: () => http.get('/api/admin/models'),
  describeModel: (name, body) => http.put(`/api/admin/models/${name.split('/').map(enc).join('/')}`, body),
  presets: () => http.get('/api/admin/presets'),
  savePresets: (body) => http.put('/api/admin/presets', body),
  serviceAccounts: (query) => http.get('/api/admin/service-accounts', { query }),
  createServiceAccount: (body) => http.post('/api/admin/service-accounts', body),
  updateServiceAccount: (id, body) => http.put(`/api/admin/service-accounts/${id}`, body),
  rotateServiceAccountKey: (id) => http.post(`/api/admin/service-accounts/${id}/key`, {}),
  grantBudget: (id, amount, reason, idempotencyKey) => http.post(`/api/admin/service-accounts/${id}/budget`, { amount, reason, idempotencyKey }),
  deadLetters: (query) => http.get('/api/admin/queue-api/dead-letters', { query }),
  reviewQueue: (query) => http.get('/api/admin/works/review', { query }),
  decideReview: (ids, action, reason) => http.post('/api/admin/works/review', { ids, action, reason }),
  safetyCategories: () => http.get('/api/admin/safety/categories'),
  safetyTerms: (query) => http.get('/api/admin/safety/terms', { query }),
  addSafetyTerm: (body) => http.post('/api/admin/safety/terms', body),
  importSafetyTerms: (items) => http.post('/api/admin/safety/terms/bulk', { items }),
  updateSafetyTerm: (id, body) => http.put(`/api/admin/safety/terms/${id}`, body),
  deleteSafetyTerm: (id) => http.del(`/api/admin/safety/terms/${id}`),
  checkSafetyText: (text) => http.post('/api/admin/safety/check', { text }),
  safetyAudit: (query) => http.get('/api/admin/safety/audit', { query }),
  safetyAuditCsv: (query) => http.blob('/api/admin/safety/audit/export', { query }),
}

/** API tokens and webhooks of the signed-in user (or, for an admin, of a service account: ``userId``). */
export const developerApi = {
  tokens: (userId) => http.get('/api/tokens', { query: userId ? { userId } : {} }),
  createToken: (body) => http.post('/api/tokens', body),
  revokeToken: (id, userId) => http.del(`/api/tokens/${enc(id)}`, { query: userId ? { userId } : {} }),
  webhooks: (userId) => http.get('/api/webhooks', { query: userId ? { userId } : {} }),
  createWebhook: (body) => http.post('/api/webhooks', body),
  deleteWebhook: (id) => http.del(`/api/webhooks/${id}`),
  deliveries: (id, query) => http.get(`/api/webhooks/${id}/deliveries`, { query }),
  redeliver: (id, deliveryId) => http.post(`/api/webhooks/${id}/deliveries/${enc(deliveryId)}/redeliver`, {}),
}

/** Save a Blob as a file through a temporary object URL. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob)
  const a = document.createElement('a')
  a.href = url
  a.download = filename
  document.body.appendChild(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 1000)
}
