// Entry point of the marathon-like web UI: Mantine AppShell with a header, a navigation bar and
// hash-routed pages, fed by the store (snapshots + the /v2/events stream).
import { AppShell, Badge, Box, Burger, Button, Group, MantineProvider, NavLink, Stack, Text, ThemeIcon, Tooltip, createTheme } from "@mantine/core"
import { useDisclosure } from "@mantine/hooks"
import { IconApps, IconBrandStackshare, IconCircleFilled, IconPlus, IconRocket } from "@tabler/icons-react"
import { StrictMode, useState } from "react"
import { createRoot } from "react-dom/client"
import type { App } from "./api.ts"
import { AppFormModal } from "./appForm.tsx"
import { NotificationsProvider } from "./notify.tsx"
import { AppPage } from "./pages/AppPage.tsx"
import { AppsPage } from "./pages/AppsPage.tsx"
import { DeploymentsPage } from "./pages/DeploymentsPage.tsx"
import { appHref, navigate, useRoute } from "./router.ts"
import { StoreProvider, useStore, type LiveState } from "./store.tsx"

const theme = createTheme({
  primaryColor: "blue",
  defaultRadius: "md",
  fontFamily: "Inter, -apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif",
  headings: { fontWeight: "650" }
})

const liveColor: Record<LiveState, string> = { live: "teal", connecting: "yellow", offline: "red" }
const liveLabel: Record<LiveState, string> = { live: "Live", connecting: "Connecting", offline: "Offline" }

const Shell = () => {
  const store = useStore()
  const route = useRoute()
  const [navOpened, { toggle }] = useDisclosure()
  const [formOpened, setFormOpened] = useState(false)
  const [editing, setEditing] = useState<App | undefined>(undefined)
  const openCreate = () => {
    setEditing(undefined)
    setFormOpened(true)
  }
  const openEdit = (app: App) => {
    setEditing(app)
    setFormOpened(true)
  }
  const attention = store.queue.filter((q) => (q.count ?? 0) > 0).length

  return (
    <AppShell header={{ height: 56 }} navbar={{ width: 232, breakpoint: "sm", collapsed: { mobile: !navOpened } }} padding="lg">
      <AppShell.Header bg="dark.8" style={{ borderBottom: "none" }}>
        <Group h="100%" px="md" justify="space-between">
          <Group gap="sm">
            <Burger opened={navOpened} onClick={toggle} hiddenFrom="sm" size="sm" color="white" />
            <ThemeIcon size={30} radius="md" variant="gradient" gradient={{ from: "blue.5", to: "cyan.4", deg: 135 }}>
              <IconBrandStackshare size={18} />
            </ThemeIcon>
            <Text c="white" fw={700} size="lg">
              marathon-like
            </Text>
            {store.info?.version !== undefined && (
              <Badge variant="outline" color="gray.5" size="sm" radius="sm" tt="none">
                v{store.info.version}
              </Badge>
            )}
          </Group>
          <Group gap="md">
            <Tooltip
              label={
                store.lastEvent === undefined
                  ? "Event stream: /v2/events"
                  : `Last event: ${store.lastEvent.type} at ${new Date(store.lastEvent.at).toLocaleTimeString()}`
              }
            >
              <Group gap={6} data-testid="live-indicator" data-live={store.live}>
                <IconCircleFilled size={10} color={`var(--mantine-color-${liveColor[store.live]}-5)`} />
                <Text size="sm" c="gray.4">
                  {liveLabel[store.live]}
                </Text>
              </Group>
            </Tooltip>
            <Button size="xs" leftSection={<IconPlus size={14} />} onClick={openCreate} visibleFrom="sm">
              New app
            </Button>
          </Group>
        </Group>
      </AppShell.Header>

      <AppShell.Navbar p="sm">
        <AppShell.Section grow>
          <Stack gap={4}>
            <NavLink
              href="#/apps"
              label="Applications"
              leftSection={<IconApps size={18} />}
              active={route.page === "apps" || route.page === "app"}
              rightSection={
                <Badge size="sm" variant="light" color={attention > 0 ? "yellow" : "gray"} circle={store.apps.length < 10}>
                  {store.apps.length}
                </Badge>
              }
              data-testid="nav-apps"
            />
            <NavLink
              href="#/deployments"
              label="Deployments"
              leftSection={<IconRocket size={18} />}
              active={route.page === "deployments"}
              rightSection={
                store.deployments.length > 0 ? (
                  <Badge size="sm" variant="filled" color="blue" circle={store.deployments.length < 10}>
                    {store.deployments.length}
                  </Badge>
                ) : undefined
              }
              data-testid="nav-deployments"
            />
          </Stack>
        </AppShell.Section>
        <AppShell.Section>
          <Box p="xs" style={{ borderTop: "1px solid var(--mantine-color-gray-2)" }}>
            <Text size="xs" c="dimmed" fw={600} tt="uppercase" mb={4}>
              Cluster
            </Text>
            <Text size="xs" c="dimmed" lineClamp={1} title={store.info?.leader ?? undefined}>
              Leader: {store.info?.leader ?? "—"}
            </Text>
            <Text size="xs" c="dimmed" lineClamp={1} title={store.info?.frameworkId ?? undefined}>
              Framework: {store.info?.frameworkId ?? "—"}
            </Text>
            <Text size="xs" c="dimmed">
              API: <a href="/v2/info">/v2</a>
            </Text>
          </Box>
        </AppShell.Section>
      </AppShell.Navbar>

      <AppShell.Main>
        <Box maw={1400} mx="auto">
          {route.page === "apps" && <AppsPage onCreate={openCreate} />}
          {route.page === "app" && <AppPage id={route.id} tab={route.tab} onEdit={openEdit} />}
          {route.page === "deployments" && <DeploymentsPage />}
        </Box>
      </AppShell.Main>

      <AppFormModal
        opened={formOpened}
        editing={editing}
        onClose={() => setFormOpened(false)}
        onSaved={(id) => {
          store.refresh()
          navigate(appHref(id))
        }}
      />
    </AppShell>
  )
}

const root = document.getElementById("root")
if (root !== null)
  createRoot(root).render(
    <StrictMode>
      <MantineProvider theme={theme} defaultColorScheme="light">
        <NotificationsProvider>
          <StoreProvider>
            <Shell />
          </StoreProvider>
        </NotificationsProvider>
      </MantineProvider>
    </StrictMode>
  )
