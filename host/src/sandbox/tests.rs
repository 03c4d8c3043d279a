//! The sandbox's limits as a guest meets them, on hand-written components: memory, table,
//! instance and deadline caps at their edge, slots that keep nothing of the last instance, and
//! limits of a plugin's own.

use super::*;
use wasmtime::component::Instance;

/// One page of linear memory.
const PAGE: usize = 64 << 10;

/// A component whose exports grow its memory and table, and spin.
const GROWER: &str = r#"
    (component
      (core module $m
        (memory 1)
        (table 1 funcref)
        (func (export "grow-memory") (param i32) (result i32)
          local.get 0 memory.grow)
        (func (export "grow-table") (param i32) (result i32)
          ref.null func local.get 0 table.grow 0)
        (func (export "spin") (param i32)
          (loop local.get 0 i32.const 1 i32.sub local.tee 0 br_if 0))
        (func (export "forever") (loop br 0)))
      (core instance $i (instantiate $m))
      (func (export "grow-memory") (param "pages" u32) (result s32)
        (canon lift (core func $i "grow-memory")))
      (func (export "grow-table") (param "elements" u32) (result s32)
        (canon lift (core func $i "grow-table")))
      (func (export "spin") (param "times" u32) (canon lift (core func $i "spin")))
      (func (export "forever") (canon lift (core func $i "forever"))))
"#;

/// A component of `n` core instances of a module with one memory and one table.
fn instances(n: usize) -> String {
    let each = "(core instance (instantiate $m))".repeat(n);
    format!("(component (core module $m (memory 1) (table 1 funcref)) {each})")
}

fn sandbox(limits: Limits) -> Arc<Sandbox> {
    Sandbox::new(limits).unwrap()
}

/// A sandbox with `limits` for each compiler: the limits are the engine's, whichever compiles.
fn on_each_compiler(limits: Limits) -> [Arc<Sandbox>; 2] {
    [Compiler::Cranelift, Compiler::Winch].map(|compiler| {
        Sandbox::with_plugin_limits(limits, HashMap::new(), None, compiler).unwrap()
    })
}

/// Compiles and instantiates `wat`; an error from either step is the `Err`.
async fn instantiate(
    sandbox: &Sandbox,
    wat: &str,
) -> (Store<GuestState>, anyhow::Result<Instance>) {
    let mut store = sandbox
        .new_store("test".into(), None, sandbox.limits, None)
        .await
        .unwrap();
    let instance = match sandbox.compile(&wat::parse_str(wat).unwrap()) {
        Ok(component) => sandbox
            .linker()
            .instantiate_async(&mut store, &component)
            .await
            .map_err(anyhow::Error::from),
        Err(error) => Err(error),
    };
    (store, instance)
}

async fn call(
    sandbox: &Sandbox,
    store: &mut Store<GuestState>,
    instance: &Instance,
    name: &str,
    arg: u32,
) -> Result<i32, HandlerFailure> {
    let func = instance
        .get_typed_func::<(u32,), (i32,)>(&mut *store, name)
        .unwrap();
    match func.call_async(&mut *store, (arg,)).await {
        Ok((value,)) => Ok(value),
        Err(error) => Err(sandbox.classify("test", store.data(), &error, None)),
    }
}

#[tokio::test]
async fn memory_at_the_cap_is_granted_and_one_page_more_traps_as_memory_limit() {
    for sandbox in on_each_compiler(Limits {
        memory_bytes: 4 * PAGE,
        ..Limits::DEFAULT
    }) {
        let on = sandbox.compiler();
        let (mut store, instance) = instantiate(&sandbox, GROWER).await;
        let instance = instance.unwrap();
        // From 1 page to 4: exactly the cap. `memory.grow` answers the old size.
        assert_eq!(
            call(&sandbox, &mut store, &instance, "grow-memory", 3).await,
            Ok(1)
        );
        let failure = call(&sandbox, &mut store, &instance, "grow-memory", 1)
            .await
            .unwrap_err();
        assert_eq!(failure.class, ErrorClass::MemoryLimit, "{on:?}: {failure}");
        assert!(
            failure.message.contains("memory_bytes"),
            "{on:?}: {failure}"
        );
        assert!(
            failure.message.contains(&(4 * PAGE).to_string()),
            "{on:?}: {failure}"
        );
    }
}

#[tokio::test]
async fn table_at_the_cap_is_granted_and_one_element_more_traps_naming_the_limit() {
    for sandbox in on_each_compiler(Limits {
        table_elements: 10,
        ..Limits::DEFAULT
    }) {
        let on = sandbox.compiler();
        let (mut store, instance) = instantiate(&sandbox, GROWER).await;
        let instance = instance.unwrap();
        assert_eq!(
            call(&sandbox, &mut store, &instance, "grow-table", 9).await,
            Ok(1)
        );
        let failure = call(&sandbox, &mut store, &instance, "grow-table", 1)
            .await
            .unwrap_err();
        assert_eq!(failure.class, ErrorClass::Trap, "{on:?}: {failure}");
        assert!(
            failure.message.contains("limit `table_elements` of 10"),
            "{on:?}: {failure}"
        );
    }
}

#[tokio::test]
async fn instances_tables_and_memories_at_the_cap_instantiate_and_one_more_fails() {
    let sandbox = sandbox(Limits {
        instances: 3,
        tables: 3,
        memories: 3,
        ..Limits::DEFAULT
    });
    let (_, at_cap) = instantiate(&sandbox, &instances(3)).await;
    at_cap.unwrap();
    let (_, past) = instantiate(&sandbox, &instances(4)).await;
    let error = format!("{:#}", past.unwrap_err());
    assert!(
        error.contains("instance") || error.contains("table") || error.contains("memor"),
        "{error}"
    );
    // Each cap on its own: with room for instances, tables or memories still stop it.
    for (tables, memories) in [(2, 3), (3, 2)] {
        let sandbox = Sandbox::new(Limits {
            instances: 3,
            tables,
            memories,
            ..Limits::DEFAULT
        })
        .unwrap();
        let (_, past) = instantiate(&sandbox, &instances(3)).await;
        assert!(past.is_err(), "tables {tables}, memories {memories}");
    }
}

#[tokio::test]
async fn a_call_within_the_deadline_finishes_and_a_loop_is_interrupted_as_deadline() {
    for sandbox in on_each_compiler(Limits {
        call_deadline: Duration::from_millis(50),
        ..Limits::DEFAULT
    }) {
        let on = sandbox.compiler();
        let (mut store, instance) = instantiate(&sandbox, GROWER).await;
        let instance = instance.unwrap();
        let spin = instance
            .get_typed_func::<(u32,), ()>(&mut store, "spin")
            .unwrap();
        spin.call_async(&mut store, (1000,)).await.unwrap();

        let started = std::time::Instant::now();
        let forever = instance
            .get_typed_func::<(), ()>(&mut store, "forever")
            .unwrap();
        let error = forever.call_async(&mut store, ()).await.unwrap_err();
        let failure = sandbox.classify("test", store.data(), &error, None);
        assert_eq!(failure.class, ErrorClass::Deadline, "{on:?}: {failure}");
        assert!(
            failure.message.contains("call_deadline"),
            "{on:?}: {failure}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}

/// A component whose exports store and load a 32-bit word at a byte address of its memory
/// (32 pages: 2 MiB, past the window kept resident between instances).
const SCRATCH: &str = r#"
    (component
      (core module $m
        (memory 32)
        (func (export "store") (param i32 i32) local.get 0 local.get 1 i32.store)
        (func (export "load") (param i32) (result i32) local.get 0 i32.load))
      (core instance $i (instantiate $m))
      (func (export "store") (param "at" u32) (param "value" u32)
        (canon lift (core func $i "store")))
      (func (export "load") (param "at" u32) (result u32)
        (canon lift (core func $i "load"))))
"#;

#[tokio::test]
async fn a_new_instance_sees_none_of_the_memory_the_last_one_wrote_in_its_slot() {
    for sandbox in on_each_compiler(Limits::DEFAULT) {
        let on = sandbox.compiler();
        // Inside the window kept resident and reset in place, and past it.
        let addresses = [64, KEEP_RESIDENT_MEMORY_BYTES as u32 + 64];
        for round in 0..3 {
            let (mut store, instance) = instantiate(&sandbox, SCRATCH).await;
            let instance = instance.unwrap();
            let store_word = instance
                .get_typed_func::<(u32, u32), ()>(&mut store, "store")
                .unwrap();
            let load = instance
                .get_typed_func::<(u32,), (u32,)>(&mut store, "load")
                .unwrap();
            for at in addresses {
                let (seen,) = load.call_async(&mut store, (at,)).await.unwrap();
                assert_eq!(seen, 0, "{on:?}, round {round}: address {at} kept a value");
                store_word
                    .call_async(&mut store, (at, 0xdead_beef))
                    .await
                    .unwrap();
            }
        }
    }
}

#[tokio::test]
async fn a_plugin_gets_its_own_limits_and_the_rest_the_defaults() {
    let mine = Limits {
        memory_bytes: 128 << 20,
        ..Limits::DEFAULT
    };
    let sandbox = Sandbox::with_plugin_limits(
        Limits::DEFAULT,
        [("big".to_owned(), mine)].into(),
        None,
        Compiler::Cranelift,
    )
    .unwrap();
    assert_eq!(sandbox.limits_for("big"), mine);
    assert_eq!(sandbox.limits_for("other"), Limits::DEFAULT);
}
