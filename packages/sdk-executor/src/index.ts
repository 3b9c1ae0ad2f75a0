/**
 * `@berth/sdk-executor`: the Effect SDK for Berth executors, and the agent's built-in command
 * executor written with it.
 *
 * @packageDocumentation
 */
export * as ExecutorSession from "./ExecutorSession.ts"
export * as CommandExecutor from "./CommandExecutor.ts"
export * as DefaultExecutor from "./DefaultExecutor.ts"
export * as ExecutorError from "./ExecutorError.ts"
export * as DockerExecutor from "./DockerExecutor.ts"
export * as ExecutorProcess from "./ExecutorProcess.ts"
