// The README's flows, written against the types that openapi-typescript generates from
// openapi/openapi.json (make openapi-lint). Only type-checked (tsc --strict), never run: when
// the spec stops describing what the server does, this file stops compiling.
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/openapi";

type Schemas = components["schemas"];
type Problem = Schemas["Problem"];
type IntegrationRead = Schemas["IntegrationRead"];
type PostRead = Schemas["PostRead"];
type DeliveryRead = Schemas["DeliveryRead"];

export function client(baseUrl: string, token: string) {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
}
type Api = ReturnType<typeof client>;

/** A problem's stable `code` is one of the codes the spec lists, nothing else. */
export function explain(problem: Problem): string {
  switch (problem.code) {
    case "plan_limit_reached":
      return "The plan allows no more integrations.";
    case "validation_error":
      return (problem.errors ?? []).map((e) => `${e.loc.join(".")}: ${e.msg}`).join("\n");
    default:
      return problem.detail ?? problem.title;
  }
}

/** README step 3: create a group; the caller becomes its manager. */
export async function createGroup(api: Api, name: string): Promise<string> {
  const { data, error } = await api.POST("/v1/groups", { body: { name } });
  if (error) throw new Error(explain(error));
  const id: string = data.id;
  const description: string | null = data.description;
  void description;
  return id;
}

/** README step 4: `{title, group_id}` is a whole request; every other field has a default. */
export async function createIntegration(
  api: Api,
  groupId: string,
): Promise<IntegrationRead | "plan limit reached"> {
  const { data, error, response } = await api.POST("/v1/integrations", {
    body: { title: "Weekly newsletter", group_id: groupId },
  });
  if (error) {
    if (error.code === "plan_limit_reached") return "plan limit reached";
    // @ts-expect-error a misspelt code is not one the server answers
    if (error.code === "plan_limit_reachd") return "plan limit reached";
    throw new Error(`${response.status} ${explain(error)}`);
  }
  const address: string = data.address;
  const displayAddress: string = data.display_address;
  const policy: "reject" | "drop" = data.oversize_attachments;
  const accepted: number = data.stats.accepted;
  void [address, displayAddress, policy, accepted];
  return data;
}

/** README step 5: a new group dedicated to the integration instead of an existing one. */
export async function createIntegrationWithNewGroup(api: Api): Promise<string | null> {
  const { data, error } = await api.POST("/v1/integrations", {
    body: { title: "Press review", new_group: { name: "Press" } },
  });
  if (error) throw new Error(explain(error));
  return data.group_id;
}

/** Change an integration: a PATCH sends only what changes, and never null where null is refused. */
export async function disable(api: Api, integrationId: string): Promise<boolean> {
  const { data, error } = await api.PATCH("/v1/integrations/{integration_id}", {
    params: { path: { integration_id: integrationId } },
    body: { enabled: false },
  });
  if (error) throw new Error(explain(error));
  // @ts-expect-error null is refused (422): left out means "keep"
  const refused: Schemas["IntegrationUpdate"] = { title: null };
  void refused;
  return data.enabled;
}

/** Every integration the caller may see, page by page, following `next_cursor`. */
export async function allIntegrations(api: Api, groupId?: string): Promise<IntegrationRead[]> {
  const all: IntegrationRead[] = [];
  let cursor: string | undefined;
  for (;;) {
    const { data, error } = await api.GET("/v1/integrations", {
      params: {
        query: { limit: 200, ...(groupId ? { group_id: groupId } : {}), ...(cursor ? { cursor } : {}) },
      },
    });
    if (error) {
      if (error.code === "invalid_cursor") return all;
      throw new Error(explain(error));
    }
    all.push(...data.items);
    const total: number = data.total;
    void total;
    if (data.next_cursor === null) return all;
    cursor = data.next_cursor;
  }
}

/** The group's feed: posts from email, newest first, with their sender and attachments. */
export async function feed(api: Api, groupId: string): Promise<string[]> {
  const { data, error } = await api.GET("/v1/groups/{group_id}/posts", {
    params: { path: { group_id: groupId }, query: { limit: 20 } },
  });
  if (error) throw new Error(explain(error));
  const posts: PostRead[] = data.items;
  const next: string | null = data.next_cursor;
  void next;
  return posts.map((post) => {
    const source: "email" = post.source;
    const author = `${post.author.name ?? ""} <${post.author.email ?? ""}>`;
    const verified: boolean = post.author.verified;
    const files = post.attachments.map((a) => `${a.filename} (${a.size} bytes) ${a.url}`);
    const left = post.omitted_attachments.map((o) => `${o.filename}: ${o.reason}`);
    return [source, author, verified, post.subject, ...files, ...left].join(" ");
  });
}

/** The delivery log of an integration, and the platform's refusals for one reason (admins). */
export async function deliveries(api: Api, integrationId: string): Promise<DeliveryRead[]> {
  const log = await api.GET("/v1/integrations/{integration_id}/deliveries", {
    params: { path: { integration_id: integrationId } },
  });
  if (log.error) throw new Error(explain(log.error));
  for (const delivery of log.data.items) {
    if (delivery.status === "rejected" && delivery.reason === "attachment_too_large") {
      const size: number = delivery.size_bytes;
      void size;
    }
    // @ts-expect-error a misspelt reason is not one the server records
    if (delivery.reason === "attachment_to_large") continue;
  }
  const refused = await api.GET("/v1/deliveries", {
    params: { query: { status: "rejected", reason: "sender_not_allowed" } },
  });
  if (refused.error) {
    if (refused.error.code === "forbidden") return log.data.items;
    throw new Error(explain(refused.error));
  }
  return [...log.data.items, ...refused.data.items];
}

/** What an inbound endpoint answers an authenticated request, whatever the status code. */
export async function inboundAnswer(response: Response): Promise<string> {
  type Answer = Schemas["InboundAnswer"];
  const answer = (await response.json()) as Answer;
  const reason: Answer["reason"] = answer.reason;
  return `${answer.status} ${reason ?? ""} ${answer.post_ids.length}`;
}
