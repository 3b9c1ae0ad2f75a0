// Hash routing (`#/apps`, `#/apps/<id>`, `#/deployments`) so the server only ever serves one page.
import { useEffect, useState } from "react"

export type Route =
  | { readonly page: "apps" }
  | { readonly page: "app"; readonly id: string; readonly tab: string | undefined }
  | { readonly page: "deployments" }

export const parseRoute = (hash: string): Route => {
  const path = hash.replace(/^#/, "")
  const parts = path.split("/").filter((p) => p !== "")
  if (parts[0] === "deployments") return { page: "deployments" }
  if (parts[0] === "apps" && parts.length >= 2) {
    let id: string
    try {
      id = decodeURIComponent(parts[1] ?? "")
    } catch {
      return { page: "apps" }
    }
    return { page: "app", id: id.startsWith("/") ? id : `/${id}`, tab: parts[2] }
  }
  return { page: "apps" }
}

/** The hash for an app page; ids keep their slashes encoded so groups stay one segment. */
export const appHref = (id: string, tab?: string): string =>
  `#/apps/${encodeURIComponent(id)}${tab === undefined ? "" : `/${tab}`}`

export const navigate = (hash: string): void => {
  window.location.hash = hash
}

export const useRoute = (): Route => {
  const [route, setRoute] = useState<Route>(() => parseRoute(window.location.hash))
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(window.location.hash))
    window.addEventListener("hashchange", onChange)
    return () => window.removeEventListener("hashchange", onChange)
  }, [])
  return route
}
