// Reads {"requests": [...]} as JSON on stdin and prints one decision per request, in order, as
// JSON: {"result": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied"} or {"error": ...} when
// the simulator refuses the request itself (an unknown action, a resource ARN of a type the
// action does not take, a context key the action does not have).
//
// A request: {"principal": role ARN, "action": "s3:GetObject", "resource": ARN,
//             "context": {key: string | [strings]}, "identityPolicies": [documents],
//             "resourcePolicy": document | null}
// @cloud-copilot/iam-simulate evaluates identity and resource policies with every condition
// operator and set qualifier (ForAllValues:StringLike on dynamodb:LeadingKeys among them), and
// checks actions, resource types and context keys against AWS's service reference data.
import { runSimulation } from '@cloud-copilot/iam-simulate'

const input = JSON.parse(await new Promise((resolve) => {
  let text = ''
  process.stdin.on('data', (chunk) => { text += chunk })
  process.stdin.on('end', () => resolve(text))
}))

const account = (arn) => arn.split(':')[4] || undefined
const decisions = []
for (const request of input.requests) {
  const simulation = {
    identityPolicies: request.identityPolicies.map((policy, i) => ({ name: `policy${i}`, policy })),
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: request.resourcePolicy ?? undefined,
    request: {
      principal: request.principal,
      action: request.action,
      resource: { resource: request.resource, accountId: account(request.resource) ?? account(request.principal) },
      contextVariables: request.context,
    },
  }
  const answer = await runSimulation(simulation, {})
  if (answer.resultType === 'error') {
    decisions.push({ error: JSON.stringify(answer.errors) })
  } else {
    decisions.push({ result: answer.overallResult })
  }
}
process.stdout.write(JSON.stringify(decisions))
