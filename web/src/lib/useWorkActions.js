import { useRouter, useRoute } from 'vue-router'
import { useI18n } from 'vue-i18n'
import { saveBlob, worksApi } from '@/api'
import { useAuthStore } from '@/stores/auth'
import { errorText } from './useFormat'
import { copyText } from './clipboard'

/** Like, download, share and "use these settings" for a work, shared by every page that shows works. */
export function useWorkActions() {
  const { t } = useI18n()
  const router = useRouter()
  const route = useRoute()
  const auth = useAuthStore()

  async function toggleLike(work) {
    if (!auth.signedIn) {
      try {
        await ElMessageBox.confirm(t('works.signInToLike'), t('works.like'), {
          confirmButtonText: t('auth.signIn'), cancelButtonText: t('common.cancel') })
        router.push({ path: '/login', query: { redirect: route.fullPath } })
      } catch { /* stayed */ }
      return
    }
    const liked = !work.isLiked
    work.isLiked = liked
    work.likes = (work.likes || 0) + (liked ? 1 : -1)
    try {
      const result = liked ? await worksApi.like(work.id) : await worksApi.unlike(work.id)
      work.likes = result.likes
      work.isLiked = result.isLiked
    } catch (e) {
      work.isLiked = !liked
      work.likes = (work.likes || 0) + (liked ? -1 : 1)
      ElMessage.error(errorText(t, e))
    }
  }

  async function download(work) {
    const name = `${(work.title || 'work').replace(/[\\/:*?"<>|]+/g, '_')}-${work.id}.png`
    try {
      saveBlob(await worksApi.download(work.id), name)
    } catch (e) {
      ElMessage.error(errorText(t, e))
    }
  }

  async function copyLink(work) {
    const url = `${window.location.origin}/works/${work.id}`
    if (await copyText(url)) ElMessage.success(t('works.linkCopied'))
    else ElMessage.info(url)
  }

  function useSettings(work, mode = 'all') {
    router.push({ path: '/create', query: { fromWork: String(work.id), reuse: mode } })
  }

  function searchTag(tag) {
    router.push({ path: '/gallery', query: { tag } })
  }

  return { toggleLike, download, copyLink, useSettings, searchTag, copyText }
}
