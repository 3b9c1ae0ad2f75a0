/**
 * `@berth/testkit`: whole Berth clusters for integration tests.
 *
 * @packageDocumentation
 */
export * as Certificates from "./Certificates.ts"
export * as Operator from "./Operator.ts"
export * as Simulation from "./Simulation.ts"
export * as TestCluster from "./TestCluster.ts"
export * as TestClusterError from "./TestClusterError.ts"
export * as Vitest from "./Vitest.ts"
