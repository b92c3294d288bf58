// The Node openai SDK against the gateway's Responses API; prints one JSON object of what it saw.
// GATEWAY_URL is the gateway's base URL (http://127.0.0.1:PORT/v1). Driven by
// tests/integration/test_responses_node.py, which scripts the fake Ollama's answers in this order:
// a plain answer, a streamed one, a function call, the answer after its output, a continued turn.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: "sk-node", maxRetries: 0, timeout: 20000 });
const weather = {
  type: "function", name: "get_weather", description: "Weather for a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};
const seen = {};

const first = await client.responses.create({ model: "llama3.2", input: "Say hello" });
seen.create = { id: first.id, text: first.output_text, status: first.status, usage: first.usage };

const stream = client.responses.stream({ model: "llama3.2", input: "Count" });
const deltas = [];
stream.on("response.output_text.delta", (event) => deltas.push(event.delta));
const streamed = await stream.finalResponse();
seen.stream = { deltas, text: streamed.output_text };

const asked = await client.responses.create({ model: "llama3.2", input: "Weather in Paris?", tools: [weather] });
const call = asked.output.find((item) => item.type === "function_call");
const answered = await client.responses.create({
  model: "llama3.2", tools: [weather], previous_response_id: asked.id,
  input: [{ type: "function_call_output", call_id: call.call_id, output: "sunny" }],
});
seen.tool = { name: call.name, arguments: JSON.parse(call.arguments), text: answered.output_text };

const next = await client.responses.create({ model: "llama3.2", input: "And then?", previous_response_id: first.id });
seen.continued = { previous: next.previous_response_id, text: next.output_text };

const got = await client.responses.retrieve(first.id);
const items = [];
for await (const item of client.responses.inputItems.list(next.id, { order: "asc", limit: 1 })) items.push(item.type);
await client.responses.delete(first.id);
let status = null;
try {
  await client.responses.retrieve(first.id);
} catch (error) {
  status = error.status;
}
seen.state = { retrieved: got.id === first.id, items, afterDelete: status };

console.log(JSON.stringify(seen));
