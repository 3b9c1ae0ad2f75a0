/**
 * `@berth/cluster-core`: the master and agent daemons (also runnable in process) and the `berth`
 * command line.
 *
 * @packageDocumentation
 */
export * as Agent from "./Agent.ts"
export * as ClusterError from "./ClusterError.ts"
export * as Master from "./Master.ts"
export * as Security from "./Security.ts"
export * as Simulator from "./Simulator.ts"
