/**
 * `@berth/marathon-like`: a Marathon-compatible service scheduler built on Berth.
 *
 * @packageDocumentation
 */
export * as AppDefinition from "./AppDefinition.ts"
export * as Server from "./Server.ts"
