/** Small facts about works and outputs shared by every view that shows them. */

/** width / height, or 1 when unknown; clamped so one extreme panorama cannot break a row. */
export function aspectRatio(item) {
  const w = Number(item?.width || item?.params?.width)
  const h = Number(item?.height || item?.params?.height)
  if (!w || !h) return 1
  return Math.min(4, Math.max(0.25, w / h))
}

/** The name shown for a person: their display name, else the login name. */
export function authorName(user) {
  return user?.displayName || user?.username || ''
}
