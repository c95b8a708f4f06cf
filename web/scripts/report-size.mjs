// Prints the gzip size of what the first page loads: the entry script, its modulepreloads
// and stylesheets, as referenced by dist/index.html.
import { readFileSync, existsSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist')
const BUDGET_KB = 350
const indexPath = join(dist, 'index.html')
if (!existsSync(indexPath)) {
  console.error('dist/index.html is missing: run `npm run build` first.')
  process.exit(1)
}
const html = readFileSync(indexPath, 'utf8')
const refs = (pattern) => [...html.matchAll(pattern)].map((m) => m[1]).filter((href) => href.startsWith('/'))
const js = [...new Set([
  ...refs(/<script[^>]*type="module"[^>]*src="([^"]+)"/g),
  ...refs(/<link[^>]*rel="modulepreload"[^>]*href="([^"]+)"/g),
])]
const css = [...new Set(refs(/<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"/g))]

function measure(files) {
  let raw = 0
  let gz = 0
  const rows = files.map((href) => {
    const bytes = readFileSync(join(dist, href.replace(/^\//, '')))
    const z = gzipSync(bytes, { level: 9 }).length
    raw += bytes.length
    gz += z
    return { href, raw: bytes.length, gz: z }
  })
  return { rows, raw, gz }
}
const kb = (n) => `${(n / 1024).toFixed(1)} KB`
const jsSize = measure(js)
const cssSize = measure(css)
for (const [label, size] of [['JS', jsSize], ['CSS', cssSize]]) {
  for (const row of size.rows) console.log(`  ${label.padEnd(3)} ${row.href.padEnd(48)} ${kb(row.raw).padStart(10)}  gzip ${kb(row.gz).padStart(9)}`)
}
const total = jsSize.gz + cssSize.gz
console.log(`Initial route: JS ${kb(jsSize.gz)} gzip, CSS ${kb(cssSize.gz)} gzip, total ${kb(total)} gzip (budget ${BUDGET_KB} KB)`)
if (total > BUDGET_KB * 1024) {
  console.error('Over budget.')
  process.exit(1)
}
