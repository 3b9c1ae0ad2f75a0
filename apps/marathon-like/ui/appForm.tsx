// Create (POST /v2/apps) or edit (PUT /v2/apps/{id}) an app, with a simple form and a JSON editor
// kept in sync. Validation failures (422) come back as `details[].path`; each path is shown next
// to its form field, and the rest in an alert above the form.
import {
  ActionIcon,
  Alert,
  Button,
  Group,
  JsonInput,
  List,
  Modal,
  NumberInput,
  Select,
  SimpleGrid,
  Stack,
  Tabs,
  Text,
  TextInput,
  Textarea,
  Tooltip
} from "@mantine/core"
import { IconAlertCircle, IconBraces, IconForms, IconPlus, IconTrash } from "@tabler/icons-react"
import { useEffect, useState } from "react"
import { ApiError, api, type App } from "./api.ts"
import { emptyErrors, mapDetails, type FieldErrors } from "./validation.ts"
import { errorMessage, useNotify } from "./notify.tsx"

const operators = ["UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS"]

interface ConstraintRow {
  field: string
  operator: string
  value: string
}

interface FormValues {
  id: string
  cmd: string
  cpus: number | string
  mem: number | string
  instances: number | string
  constraints: ConstraintRow[]
}

const emptyForm: FormValues = { id: "", cmd: "", cpus: 0.1, mem: 32, instances: 1, constraints: [] }

// Read-only fields Marathon returns in GET but rejects or ignores on write.
const readOnlyFields = [
  "version",
  "versionInfo",
  "tasksRunning",
  "tasksStaged",
  "tasksHealthy",
  "tasksUnhealthy",
  "deployments",
  "tasks",
  "lastTaskFailure",
  "readinessCheckResults",
  "taskStats",
  "tasksStats"
]

export const editableDefinition = (app: App): Record<string, unknown> => {
  const copy: Record<string, unknown> = { ...app }
  for (const f of readOnlyFields) delete copy[f]
  return copy
}

const formFromDefinition = (def: Record<string, unknown>): FormValues => {
  const constraints = Array.isArray(def.constraints)
    ? def.constraints.flatMap((c): ConstraintRow[] =>
        Array.isArray(c) ? [{ field: String(c[0] ?? ""), operator: String(c[1] ?? "UNIQUE"), value: c[2] === undefined ? "" : String(c[2]) }] : []
      )
    : []
  const num = (v: unknown, d: number | string): number | string => (typeof v === "number" ? v : d)
  return {
    id: typeof def.id === "string" ? def.id : "",
    cmd: typeof def.cmd === "string" ? def.cmd : "",
    cpus: num(def.cpus, ""),
    mem: num(def.mem, ""),
    instances: num(def.instances, ""),
    constraints
  }
}

// Form values win over the JSON for the fields the form shows; everything else in the JSON stays.
const definitionFromForm = (form: FormValues, base: Record<string, unknown>): Record<string, unknown> => {
  const def: Record<string, unknown> = { ...base }
  const set = (key: string, value: unknown) => {
    if (value === "" || value === undefined) delete def[key]
    else def[key] = value
  }
  set("id", form.id.trim())
  set("cmd", form.cmd)
  set("cpus", form.cpus)
  set("mem", form.mem)
  set("instances", form.instances)
  if (form.constraints.length > 0)
    def.constraints = form.constraints.map((c) => (c.value.trim() === "" ? [c.field.trim(), c.operator] : [c.field.trim(), c.operator, c.value.trim()]))
  else delete def.constraints
  return def
}

export interface AppFormModalProps {
  opened: boolean
  onClose: () => void
  /** Edit this app (PUT) instead of creating one (POST). */
  editing?: App | undefined
  onSaved: (id: string) => void
}

export const AppFormModal = ({ opened, onClose, editing, onSaved }: AppFormModalProps) => {
  const { show } = useNotify()
  const [tab, setTab] = useState<string>("form")
  const [form, setForm] = useState<FormValues>(emptyForm)
  const [json, setJson] = useState("")
  const [base, setBase] = useState<Record<string, unknown>>({})
  const [errors, setErrors] = useState<FieldErrors>(emptyErrors())
  const [general, setGeneral] = useState<string | undefined>(undefined)
  const [busy, setBusy] = useState(false)

  useEffect(() => {
    if (!opened) return
    const def = editing !== undefined ? editableDefinition(editing) : { id: "", cmd: "", cpus: 0.1, mem: 32, instances: 1 }
    setBase(def)
    setForm(editing !== undefined ? formFromDefinition(def) : emptyForm)
    setJson(JSON.stringify(def, null, 2))
    setTab("form")
    setErrors(emptyErrors())
    setGeneral(undefined)
  }, [opened, editing])

  const parseJson = (): Record<string, unknown> | undefined => {
    try {
      const v: unknown = JSON.parse(json)
      if (v === null || typeof v !== "object" || Array.isArray(v)) {
        setGeneral("The app definition must be a JSON object")
        return undefined
      }
      return v as Record<string, unknown>
    } catch (e) {
      setGeneral(`Invalid JSON: ${errorMessage(e)}`)
      return undefined
    }
  }

  const switchTab = (next: string | null) => {
    if (next === null || next === tab) return
    if (next === "json") {
      const def = definitionFromForm(form, base)
      setBase(def)
      setJson(JSON.stringify(def, null, 2))
    } else {
      const def = parseJson()
      if (def === undefined) return
      setBase(def)
      setForm(formFromDefinition(def))
    }
    setGeneral(undefined)
    setTab(next)
  }

  const submit = async (force = false) => {
    setGeneral(undefined)
    let def: Record<string, unknown> | undefined
    if (tab === "json") def = parseJson()
    else def = definitionFromForm(form, base)
    if (def === undefined) return
    const id = typeof def.id === "string" ? def.id : ""
    setBusy(true)
    try {
      if (editing !== undefined) await api.replaceApp(editing.id, def, force)
      else await api.createApp(def)
      setErrors(emptyErrors())
      show({
        title: editing !== undefined ? "Application updated" : "Application created",
        message: editing !== undefined ? `Deploying the new version of ${editing.id}` : `Deploying ${id.startsWith("/") ? id : `/${id}`}`,
        color: "teal"
      })
      onSaved(editing?.id ?? (id.startsWith("/") ? id : `/${id}`))
      onClose()
    } catch (e) {
      if (e instanceof ApiError && (e.status === 422 || e.status === 400) && e.details.length > 0) {
        const mapped = mapDetails(e.details)
        setErrors(mapped)
        // In the JSON editor no field is visible, so every detail goes into the alert.
        setGeneral(e.message)
        if (tab === "json") setErrors({ ...mapped, other: e.details })
      } else if (e instanceof ApiError && e.status === 409 && editing !== undefined && !force) {
        show({
          title: "Locked by a deployment",
          message: `${e.message}. Forcing cancels the running deployment.`,
          color: "yellow",
          sticky: true,
          action: { label: "Force", run: () => void submit(true) }
        })
      } else {
        setGeneral(errorMessage(e))
      }
    } finally {
      setBusy(false)
    }
  }

  const setField = <K extends keyof FormValues>(key: K, value: FormValues[K]) => {
    setForm((f) => ({ ...f, [key]: value }))
    if (errors.byField[key] !== undefined) setErrors((e) => ({ ...e, byField: { ...e.byField, [key]: undefined } }))
  }
  const fieldError = (key: string): string | undefined => errors.byField[key] || undefined

  const setConstraint = (i: number, patch: Partial<ConstraintRow>) =>
    setForm((f) => ({ ...f, constraints: f.constraints.map((c, j) => (j === i ? { ...c, ...patch } : c)) }))

  return (
    <Modal
      opened={opened}
      onClose={onClose}
      title={<Text fw={600}>{editing !== undefined ? `Edit ${editing.id}` : "Create application"}</Text>}
      size="xl"
    >
      <Stack gap="md">
        {(general !== undefined || errors.other.length > 0) && (
          <Alert color="red" icon={<IconAlertCircle size={18} />} title={general ?? "Invalid application"} data-testid="form-error">
            {errors.other.length === 0 && tab === "form" && Object.keys(errors.byField).length + Object.keys(errors.constraintRows).length > 0 && (
              <Text size="sm">Fix the highlighted fields and submit again.</Text>
            )}
            {errors.other.length > 0 && (
              <List size="sm">
                {errors.other.map((d) => (
                  <List.Item key={d.path}>
                    <Text span ff="monospace" size="sm">
                      {d.path}
                    </Text>
                    : {d.errors.join("; ")}
                  </List.Item>
                ))}
              </List>
            )}
          </Alert>
        )}
        <Tabs value={tab} onChange={switchTab}>
          <Tabs.List>
            <Tabs.Tab value="form" leftSection={<IconForms size={16} />}>
              Form
            </Tabs.Tab>
            <Tabs.Tab value="json" leftSection={<IconBraces size={16} />}>
              JSON editor
            </Tabs.Tab>
          </Tabs.List>
          <Tabs.Panel value="form" pt="md">
            <Stack gap="sm">
              <TextInput
                label="ID"
                description="A path such as /web or /team/api"
                placeholder="/my-app"
                required
                disabled={editing !== undefined}
                value={form.id}
                onChange={(e) => setField("id", e.currentTarget.value)}
                error={fieldError("id")}
                data-testid="field-id"
              />
              <Textarea
                label="Command"
                description="Run by the shell on the agent"
                placeholder="python3 -m http.server $PORT0"
                autosize
                minRows={2}
                value={form.cmd}
                onChange={(e) => setField("cmd", e.currentTarget.value)}
                error={fieldError("cmd")}
                styles={{ input: { fontFamily: "var(--mantine-font-family-monospace)" } }}
                data-testid="field-cmd"
              />
              <SimpleGrid cols={3}>
                <NumberInput
                  label="CPUs"
                  min={0}
                  step={0.1}
                  decimalScale={3}
                  value={form.cpus}
                  onChange={(v) => setField("cpus", v)}
                  error={fieldError("cpus")}
                  data-testid="field-cpus"
                />
                <NumberInput
                  label="Memory (MiB)"
                  min={0}
                  step={32}
                  value={form.mem}
                  onChange={(v) => setField("mem", v)}
                  error={fieldError("mem")}
                  data-testid="field-mem"
                />
                <NumberInput
                  label="Instances"
                  min={0}
                  allowDecimal={false}
                  value={form.instances}
                  onChange={(v) => setField("instances", v)}
                  error={fieldError("instances")}
                  data-testid="field-instances"
                />
              </SimpleGrid>
              <Stack gap={6}>
                <Group justify="space-between">
                  <div>
                    <Text size="sm" fw={500}>
                      Constraints
                    </Text>
                    <Text size="xs" c="dimmed">
                      Placement rules on agent attributes, e.g. hostname UNIQUE
                    </Text>
                  </div>
                  <Button
                    size="xs"
                    variant="light"
                    leftSection={<IconPlus size={14} />}
                    onClick={() => setField("constraints", [...form.constraints, { field: "hostname", operator: "UNIQUE", value: "" }])}
                  >
                    Add constraint
                  </Button>
                </Group>
                {fieldError("constraints") !== undefined && (
                  <Text size="xs" c="red">
                    {fieldError("constraints")}
                  </Text>
                )}
                {form.constraints.map((c, i) => (
                  <Group key={i} gap="xs" align="flex-start" wrap="nowrap">
                    <TextInput
                      placeholder="field"
                      value={c.field}
                      onChange={(e) => setConstraint(i, { field: e.currentTarget.value })}
                      error={errors.constraintRows[i]}
                      style={{ flex: 2 }}
                      aria-label={`Constraint ${i + 1} field`}
                    />
                    <Select
                      data={operators}
                      value={c.operator}
                      onChange={(v) => setConstraint(i, { operator: v ?? "UNIQUE" })}
                      allowDeselect={false}
                      style={{ flex: 2 }}
                      aria-label={`Constraint ${i + 1} operator`}
                    />
                    <TextInput
                      placeholder="value (optional)"
                      value={c.value}
                      onChange={(e) => setConstraint(i, { value: e.currentTarget.value })}
                      style={{ flex: 2 }}
                      aria-label={`Constraint ${i + 1} value`}
                    />
                    <Tooltip label="Remove">
                      <ActionIcon
                        variant="subtle"
                        color="red"
                        mt={4}
                        onClick={() => setField("constraints", form.constraints.filter((_, j) => j !== i))}
                        aria-label={`Remove constraint ${i + 1}`}
                      >
                        <IconTrash size={16} />
                      </ActionIcon>
                    </Tooltip>
                  </Group>
                ))}
              </Stack>
              <Text size="xs" c="dimmed">
                Other fields (env, labels, health checks, container, …) are kept as they are in the JSON editor.
              </Text>
            </Stack>
          </Tabs.Panel>
          <Tabs.Panel value="json" pt="md">
            <JsonInput
              value={json}
              onChange={setJson}
              autosize
              minRows={14}
              maxRows={24}
              formatOnBlur
              validationError="Invalid JSON"
              styles={{ input: { fontSize: 13 } }}
              data-testid="field-json"
            />
          </Tabs.Panel>
        </Tabs>
        <Group justify="flex-end">
          <Button variant="default" onClick={onClose}>
            Cancel
          </Button>
          <Button onClick={() => void submit()} loading={busy} data-testid="submit-app">
            {editing !== undefined ? "Deploy changes" : "Create application"}
          </Button>
        </Group>
      </Stack>
    </Modal>
  )
}
