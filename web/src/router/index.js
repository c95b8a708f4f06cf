import { createRouter, createWebHistory } from 'vue-router'
import { useAuthStore } from '@/stores/auth'

const routes = [
  { path: '/', redirect: () => (useAuthStore().signedIn ? '/dashboard' : '/gallery') },
  { path: '/login', name: 'login', component: () => import('@/views/LoginView.vue'), meta: { guest: true, bare: true } },
  { path: '/register', name: 'register', component: () => import('@/views/RegisterView.vue'), meta: { guest: true, bare: true } },
  { path: '/forgot-password', name: 'forgot', component: () => import('@/views/ForgotPasswordView.vue'), meta: { guest: true, bare: true } },
  { path: '/sso/callback', name: 'sso-callback', component: () => import('@/views/SsoCallbackView.vue'), meta: { bare: true } },
  { path: '/reset-password', name: 'reset', component: () => import('@/views/ResetPasswordView.vue'), meta: { bare: true } },
  { path: '/dashboard', name: 'dashboard', component: () => import('@/views/DashboardView.vue'), meta: { auth: true } },
  { path: '/create', name: 'create', component: () => import('@/views/CreateView.vue'), meta: { auth: true } },
  { path: '/history', name: 'history', component: () => import('@/views/HistoryView.vue'), meta: { auth: true } },
  { path: '/gallery', name: 'gallery', component: () => import('@/views/GalleryView.vue') },
  { path: '/works/:id', name: 'work', component: () => import('@/views/WorkView.vue'), props: true },
  { path: '/u/:username', name: 'user', component: () => import('@/views/UserView.vue'), props: true },
  { path: '/my-works', name: 'my-works', component: () => import('@/views/MyWorksView.vue'), meta: { auth: true } },
  { path: '/profile', name: 'profile', component: () => import('@/views/ProfileView.vue'), meta: { auth: true } },
  { path: '/developer', name: 'developer', component: () => import('@/views/DeveloperView.vue'), meta: { auth: true } },
  { path: '/notifications', name: 'notifications', component: () => import('@/views/NotificationsView.vue'), meta: { auth: true } },
  { path: '/admin', name: 'admin', component: () => import('@/views/admin/AdminView.vue'), meta: { auth: true, admin: true } },
  { path: '/:pathMatch(.*)*', name: 'not-found', component: () => import('@/views/NotFoundView.vue') },
]

export const router = createRouter({
  history: createWebHistory(),
  routes,
  scrollBehavior: (to, from, saved) => saved || (to.path !== from.path ? { top: 0 } : undefined),
})

router.beforeEach((to) => {
  const auth = useAuthStore()
  if (to.meta.auth && !auth.signedIn) return { name: 'login', query: { redirect: to.fullPath } }
  if (to.meta.guest && auth.signedIn) return { name: 'dashboard' }
  if (to.meta.admin && !auth.isAdmin) return { name: 'not-found', params: { pathMatch: to.path.slice(1).split('/') } }
  return true
})
